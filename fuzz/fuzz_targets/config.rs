//! Configuration parsing: a TOML text in, through the same `config::load` the binary runs
//! (defaults, then the file, then an environment and flags that add nothing), a `Config`
//! or an error out.
#![no_main]

use std::io::Write;
use std::sync::Mutex;

use berth_registry::config::{Overrides, load};
use figment::providers::Env;
use libfuzzer_sys::fuzz_target;

/// One file per process, rewritten for each input: `load` reads a path, as `berth serve`
/// does with `--config`.
static FILE: Mutex<Option<tempfile::NamedTempFile>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Ok(mut slot) = FILE.lock() else { return };
    if slot.is_none() {
        *slot = tempfile::Builder::new().suffix(".toml").tempfile().ok();
    }
    let Some(file) = slot.as_mut() else { return };
    if file.as_file_mut().set_len(0).is_err() {
        return;
    }
    let mut f = file.as_file();
    if std::io::Seek::rewind(&mut f).is_err() || f.write_all(data).is_err() || f.flush().is_err() {
        return;
    }
    // No process environment: a prefix nothing in it carries.
    let env = Env::prefixed("BERTH_FUZZ_NOTHING_");
    if let Ok(config) = load(Some(file.path()), env, &Overrides::default()) {
        // What startup does next with a loaded config.
        let _ = config.blob_dir();
        let _ = config.metadata_path();
    }
});
