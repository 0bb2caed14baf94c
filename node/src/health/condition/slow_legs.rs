//! Slow legs: a leg the kernel keeps (it fails only legs that return
//! errors) whose I/Os take far longer than the other legs'.

/// Legs whose I/Os took far longer than the others' between two samples of
/// their counters (I/Os, ms): (leg, ms per I/O, typical ms of the others).
/// A leg needs a few I/Os to be judged, and is slow at ≥ 50 ms per I/O and
/// ≥ 5× the others' median (the kernel keeps such a leg: it only fails legs
/// that return errors).
pub fn slow_legs(
    before: &[Option<(u64, u64)>],
    now: &[Option<(u64, u64)>],
) -> Vec<(u32, u64, u64)> {
    const MIN_IOS: u64 = 4;
    let lat: Vec<Option<u64>> = now
        .iter()
        .zip(before.iter())
        .map(|(n, b)| match (n, b) {
            (Some((ni, nm)), Some((bi, bm))) if ni >= bi && nm >= bm && ni - bi >= MIN_IOS => {
                Some((nm - bm) / (ni - bi))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, l) in lat.iter().enumerate() {
        let Some(ms) = l else { continue };
        let mut others: Vec<u64> = lat
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, o)| *o)
            .collect();
        if others.is_empty() {
            continue;
        }
        others.sort_unstable();
        let typical = others[others.len() / 2];
        if *ms >= 50 && *ms >= 5 * typical.max(1) {
            out.push((i as u32, *ms, typical));
        }
    }
    out
}
