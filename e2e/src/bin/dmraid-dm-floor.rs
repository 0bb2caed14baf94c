//! `dmraid-dm-floor`: the floor for CreateVolume. Creates device-mapper
//! devices by ioctl from this one process (the `devicemapper` crate, as
//! the driver does), in order, and prints the milliseconds it took. The
//! bench feeds it the tables of a volume the driver made, so the figure is
//! the same devices with nothing else: no labels, no zeroing, no status.
//!
//! stdin: one device per line, `<name> <start> <length> <type> <params>`;
//! a word `@<name>` in the params stands for the `major:minor` of a device
//! made on an earlier line. `dmraid-dm-floor --remove` removes the named
//! devices instead, last first.

use devicemapper::{DevId, DmName, DmOptions, DM};
use std::collections::BTreeMap;
use std::io::Read;

fn main() {
    if let Err(e) = run() {
        eprintln!("dmraid-dm-floor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| e.to_string())?;
    let dm = DM::new().map_err(|e| format!("open /dev/mapper/control: {e}"))?;
    let lines: Vec<&str> = input.lines().filter(|l| !l.trim().is_empty()).collect();
    if std::env::args().any(|a| a == "--remove") {
        for line in lines.iter().rev() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let name = DmName::new(name).map_err(|e| format!("{name}: {e}"))?;
            dm.device_remove(&DevId::Name(name), DmOptions::default())
                .map_err(|e| format!("remove {name}: {e}"))?;
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut made: BTreeMap<String, String> = BTreeMap::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let (Some(name), Some(start), Some(len), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!(
                "{line:?}: want <name> <start> <length> <type> <params>"
            ));
        };
        let params = words
            .map(|w| match w.strip_prefix('@') {
                Some(dev) => made
                    .get(dev)
                    .cloned()
                    .ok_or_else(|| format!("{line:?}: {dev} was not made before")),
                None => Ok(w.to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(" ");
        let num = |w: &str| w.parse::<u64>().map_err(|e| format!("{line:?}: {w}: {e}"));
        let table = vec![(num(start)?, num(len)?, kind.to_string(), params)];
        let dm_name = DmName::new(name).map_err(|e| format!("{name}: {e}"))?;
        dm.device_create(dm_name, None, DmOptions::default())
            .map_err(|e| format!("create {name}: {e}"))?;
        let id = DevId::Name(dm_name);
        dm.table_load(&id, &table, DmOptions::default())
            .map_err(|e| format!("load {name}: {e}"))?;
        let info = dm
            .device_suspend(&id, DmOptions::default())
            .map_err(|e| format!("resume {name}: {e}"))?;
        let dev = info.device();
        made.insert(name.to_string(), format!("{}:{}", dev.major, dev.minor));
    }
    println!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}
