//! A sync's progress in words: the time left, durations for people, and
//! the percentage and bar the CLI shows from a condition message.

/// A duration for people: "45s", "3m", "2h10m".
pub fn duration_words(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs.div_ceil(60)),
        _ => {
            let m = secs.div_ceil(60);
            if m.is_multiple_of(60) {
                format!("{}h", m / 60)
            } else {
                format!("{}h{}m", m / 60, m % 60)
            }
        }
    }
}

/// Time left of a sync from two samples of (seconds, sectors synced) and
/// the total; None when nothing moved or the samples go backwards.
pub fn eta(earlier: (f64, u64), later: (f64, u64), total: u64) -> Option<u64> {
    let dt = later.0 - earlier.0;
    let done = later.1.checked_sub(earlier.1)?;
    if dt <= 0.0 || done == 0 {
        return None;
    }
    let rate = done as f64 / dt;
    Some((total.saturating_sub(later.1) as f64 / rate).ceil() as u64)
}

/// The resync/rebuild/scrub percentage inside a condition message written by
/// [`condition`](super::condition), for progress bars in the CLI.
pub fn progress(message: &str) -> Option<u32> {
    ["rebuilding", "resyncing", "scrubbing", "resync pending"]
        .iter()
        .find_map(|word| {
            let rest = &message[message.find(word)?..];
            let pct = rest.find('%')?;
            let digits: String = rest[..pct]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.chars().rev().collect::<String>().parse().ok()
        })
}

/// A text progress bar: `[#####-----]  50%`.
pub fn bar(pct: u32) -> String {
    let filled = (pct.min(100) / 5) as usize;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        "-".repeat(20 - filled)
    )
}
