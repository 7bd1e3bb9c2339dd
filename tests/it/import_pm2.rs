//! `lmctl import-pm2` on the two real PM2 ecosystem files of the seeds: the output passes
//! `lmctl check`, and options with no meaning here are warned about.

use std::process::Command;

use crate::harness::*;

#[test]
fn both_seed_ecosystems_convert_to_a_valid_config() {
    if Command::new("node").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node is missing in CI"
        );
        eprintln!("SKIP: node is not installed; import-pm2 of .js files needs it");
        return;
    }
    for (file, service, port) in [
        (
            "central-hub.ecosystem.config.js",
            "leadmaster-central-hub",
            "3012",
        ),
        (
            "session-manager.ecosystem.config.cjs",
            "session-manager",
            "3001",
        ),
    ] {
        let path = format!("{}/tests/fixtures/pm2/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(LMCTL)
            .args(["import-pm2", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let toml = String::from_utf8_lossy(&out.stdout).into_owned();
        let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(warnings.contains("max_memory_restart"), "{warnings}");
        assert!(warnings.starts_with("warning: "), "{warnings}");
        assert!(toml.contains(&format!("[services.{service}]")), "{toml}");
        let d = Daemon::new("");
        std::fs::write(&d.config, &toml).unwrap();
        let check = d.lmctl(&["check"]);
        assert!(
            check.status.success(),
            "{}\n{toml}",
            String::from_utf8_lossy(&check.stdout)
        );
        let config = lmsup::config::load(&d.config).unwrap();
        assert_eq!(config.services[service].env["PORT"].value, port);
        assert_eq!(config.services[service].max_memory, Some(1 << 30));
    }
}

#[test]
fn a_bad_file_gets_a_clear_error() {
    let d = Daemon::new("");
    std::fs::write(d.path("eco.json"), "42").unwrap();
    let out = d.lmctl(&["import-pm2", d.path("eco.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
    let out = d.lmctl(&["import-pm2", "/no/such/file.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.json"));
}
