//! The guest agent of the test VM: reads one JSON request per line from the
//! virtio-serial port, runs it with `/bin/sh -c`, and writes one JSON answer
//! per line (exit code, stdout and stderr base64-encoded, so binary files
//! travel too). Requests run one at a time; background work is the
//! command's own business (`cmd &`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[derive(Deserialize)]
struct Request {
    id: u64,
    cmd: String,
    #[serde(default)]
    stdin: String,
}

#[derive(Serialize)]
struct Answer {
    id: u64,
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(req: &Request) -> Answer {
    let b64 = base64::engine::general_purpose::STANDARD;
    let input = b64.decode(&req.stdin).unwrap_or_default();
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&req.cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Answer {
                id: req.id,
                code: 127,
                stdout: String::new(),
                stderr: b64.encode(format!("agent: cannot start /bin/sh: {e}")),
            }
        }
    };
    // Feed stdin from a thread so a command that writes a lot before reading cannot deadlock us.
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let out = child.wait_with_output();
    let _ = writer.join();
    match out {
        Ok(out) => Answer {
            id: req.id,
            code: out.status.code().unwrap_or(128 + 9),
            stdout: b64.encode(&out.stdout),
            stderr: b64.encode(&out.stderr),
        },
        Err(e) => Answer {
            id: req.id,
            code: 127,
            stdout: String::new(),
            stderr: b64.encode(format!("agent: wait failed: {e}")),
        },
    }
}

fn main() {
    let Some(port) = std::env::args().nth(1) else {
        eprintln!("usage: dmraid-e2e-agent /dev/vportNpM");
        std::process::exit(2);
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("agent: cannot open {port}: {e}");
            std::process::exit(1);
        }
    };
    let mut out = match file.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("agent: cannot clone {port}: {e}");
            std::process::exit(1);
        }
    };
    let reader = BufReader::new(file);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(req) => run(&req),
            Err(e) => Answer {
                id: 0,
                code: 2,
                stdout: String::new(),
                stderr: base64::engine::general_purpose::STANDARD
                    .encode(format!("agent: bad request: {e}")),
            },
        };
        let Ok(mut text) = serde_json::to_string(&answer) else {
            continue;
        };
        text.push('\n');
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            break;
        }
    }
}
