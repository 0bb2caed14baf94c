//! A small QMP client: the QEMU monitor protocol over a Unix socket, used to
//! hot-remove and hot-add disks. Asynchronous events are kept so a caller
//! can wait for one (`DEVICE_DELETED`) after its command returned.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connected QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Connect to the QMP socket (retrying until `deadline`) and leave capability negotiation.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Qmp, String> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("QMP socket {}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read(deadline)?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected QMP greeting: {greeting}"));
        }
        qmp.execute("qmp_capabilities", json!({}), deadline)?;
        Ok(qmp)
    }

    fn read(&mut self, deadline: Instant) -> Result<Value, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("QMP: deadline passed".into());
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP: QEMU closed the monitor".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP: bad JSON {line:?}: {e}"))
    }

    /// Run a command and return its `return` value; an `error` answer is an Err.
    pub fn execute(&mut self, cmd: &str, args: Value, deadline: Instant) -> Result<Value, String> {
        let mut msg = json!({ "execute": cmd });
        if args.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.read(deadline)?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(err) = v.get("error") {
                return Err(format!("QMP {cmd} failed: {err}"));
            }
            if let Some(ret) = v.get("return") {
                return Ok(ret.clone());
            }
        }
    }

    /// Wait for an event named `name` whose `data` satisfies `matches`.
    pub fn wait_event(
        &mut self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
        deadline: Instant,
    ) -> Result<Value, String> {
        let is_it = |v: &Value| v["event"] == name && matches(&v["data"]);
        if let Some(pos) = self.events.iter().position(is_it) {
            return Ok(self.events.remove(pos));
        }
        loop {
            let v = self.read(deadline)?;
            if is_it(&v) {
                return Ok(v);
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}
