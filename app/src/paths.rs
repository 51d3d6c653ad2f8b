//! Where Kiln keeps things on this machine, shared by the command line and the window: the
//! cache (model hashes), the output folder, the models folder.

use std::path::PathBuf;

/// Kiln's cache folder: `$XDG_CACHE_HOME/kiln` or `~/.cache/kiln` (None without a home).
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("kiln"))
}

/// `~/Pictures/Kiln` when there is a home folder, else `./kiln-output`.
pub fn default_output_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("Pictures").join("Kiln"))
        .unwrap_or_else(|| PathBuf::from("kiln-output"))
}

/// The default models folder: `$XDG_DATA_HOME/kiln/models` (`~/.local/share/kiln/models`) on
/// Linux, `~/Library/Application Support/Kiln/models` on macOS, `%APPDATA%\Kiln\models` on
/// Windows; `./kiln-models` when there is no home folder.
pub fn default_models_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if cfg!(target_os = "windows") {
        return var("APPDATA")
            .map(|d| d.join("Kiln").join("models"))
            .unwrap_or_else(|| PathBuf::from("kiln-models"));
    }
    if cfg!(target_os = "macos") {
        return var("HOME")
            .map(|h| h.join("Library/Application Support/Kiln/models"))
            .unwrap_or_else(|| PathBuf::from("kiln-models"));
    }
    var("XDG_DATA_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local").join("share")))
        .map(|d| d.join("kiln").join("models"))
        .unwrap_or_else(|| PathBuf::from("kiln-models"))
}

/// The built-in model (kiln-tiny), or an error that says where it was looked for.
pub fn bundled_or_error() -> anyhow::Result<PathBuf> {
    kiln_hub::install::bundled_model().ok_or_else(|| {
        anyhow::anyhow!(
            "no model given and the built-in model ({}) is not installed; looked in: {}",
            kiln_hub::install::NAME,
            kiln_hub::install::candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}
