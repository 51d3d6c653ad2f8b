//! The model Kiln ships: `kiln-tiny`, a small SD 1.x-architecture model Kiln trained itself
//! (`assets/models/kiln-tiny/README.md` says how), so a fresh install draws real pictures
//! offline. It is a diffusers folder found at run time, in this order:
//!
//! 1. `$KILN_BUNDLED_MODEL` (a folder), when set;
//! 2. beside the executable as installed: `<exe>/../share/kiln/models/kiln-tiny` (the `.deb`),
//!    `<exe>/../Resources/models/kiln-tiny` (the macOS `.app`), `<exe>/models/kiln-tiny`
//!    (a portable folder);
//! 3. the source tree it was built from (`assets/models/kiln-tiny`), for `cargo run`.

use std::path::{Path, PathBuf};

/// The shipped model's name.
pub const NAME: &str = "kiln-tiny";

/// The prompt the studio starts with when it opens the shipped model for the first time. It
/// names no position: kiln-tiny draws the colour, shape and background asked for, but puts
/// the shape where the words say only about a third of the time (its README), and a first
/// image should show what it asked for.
pub const SAMPLE_PROMPT: &str = "a large red circle on a blue background";

/// Where the shipped model is, if it is anywhere (see the module docs for the order), as a
/// canonical path (`/usr/share/kiln/models/kiln-tiny`, not `/usr/bin/../share/…`): it is what
/// recipes and recent-model lists record.
pub fn bundled_model() -> Option<PathBuf> {
    candidates()
        .into_iter()
        .find(|p| is_model(p))
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// Every place [`bundled_model`] looks, in order.
pub fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("KILN_BUNDLED_MODEL").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        out.push(dir.join("../share/kiln/models").join(NAME));
        out.push(dir.join("../Resources/models").join(NAME));
        out.push(dir.join("models").join(NAME));
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../assets/models")
            .join(NAME),
    );
    out
}

fn is_model(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
}

/// The LoRAs shipped with the shipped model at `model` (`kiln-tiny-striped`): the `loras`
/// folder beside its `models` folder (`assets/loras`, `/usr/share/kiln/loras`, …), sorted.
pub fn loras_beside(model: &Path) -> Vec<PathBuf> {
    let Some(dir) = model
        .parent()
        .and_then(Path::parent)
        .map(|share| share.join("loras"))
    else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Whether `path` is the shipped model (wherever it was found).
pub fn is_bundled(path: &Path) -> bool {
    let canon = |p: &Path| p.canonicalize().ok();
    bundled_model().is_some_and(|b| canon(&b).is_some() && canon(&b) == canon(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_lora_ships_beside_the_model_in_the_source_tree() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../assets/models")
            .join(NAME);
        let loras = loras_beside(&model);
        let names: Vec<String> = loras
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["kiln-tiny-striped.safetensors"]);
        assert!(loras_beside(Path::new("/")).is_empty());
    }
}
