//! Which config `lmctl` uses: `--config`, then `$LMCTL_CONFIG`, then `./supervisor.toml`,
//! then `/etc/leadmaster/supervisor.toml`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The system-wide config, last in the search.
pub const SYSTEM_CONFIG: &str = "/etc/leadmaster/supervisor.toml";
/// The config beside the operator, third in the search.
pub const LOCAL_CONFIG: &str = "supervisor.toml";

/// The config to use. An explicit choice (`--config`, `$LMCTL_CONFIG`) is used even when
/// the file is missing, so the error names it; otherwise the first file that exists. With
/// none, the error lists every place looked at.
pub fn config_path(flag: Option<&Path>, env: Option<&OsStr>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    for candidate in [LOCAL_CONFIG, SYSTEM_CONFIG] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let cwd = std::env::current_dir()
        .map(|d| d.join(LOCAL_CONFIG).display().to_string())
        .unwrap_or_else(|_| format!("./{LOCAL_CONFIG}"));
    anyhow::bail!(
        "no config found; looked at --config (not given), $LMCTL_CONFIG (not set), {cwd} \
         (no such file) and {SYSTEM_CONFIG} (no such file). Pass --config FILE, set \
         LMCTL_CONFIG, or run lmctl in the folder that holds supervisor.toml"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_choices_win_in_order() {
        assert_eq!(
            config_path(Some(Path::new("/a.toml")), Some(OsStr::new("/b.toml"))).unwrap(),
            PathBuf::from("/a.toml")
        );
        assert_eq!(
            config_path(None, Some(OsStr::new("/b.toml"))).unwrap(),
            PathBuf::from("/b.toml")
        );
    }
}
