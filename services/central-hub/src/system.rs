//! Process facts for `/status`.

/// Resident set size of this process, from `/proc/self/status` (`VmRSS`, in kB).
/// `None` where procfs is unavailable.
pub fn rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rss_is_readable_on_linux() {
        assert!(super::rss_bytes().unwrap() > 0);
    }
}
