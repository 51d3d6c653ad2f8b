//! Which model family a checkpoint or adapter belongs to — judged from tensor names, shapes
//! and metadata — and how it is named to people (and in `kiln inspect`'s JSON).

use serde::{Deserialize, Serialize};

/// A Stable Diffusion family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum ModelFamily {
    /// Stable Diffusion 1.x (what Kiln runs).
    Sd1,
    /// Stable Diffusion 2.x (OpenCLIP text encoder, 1024-wide context).
    Sd2,
    /// Stable Diffusion XL.
    Sdxl,
    /// An SD 1.x/2.x inpainting model (9 input channels).
    Inpainting,
}

impl ModelFamily {
    /// Every family, for parsing names.
    pub const ALL: [ModelFamily; 4] = [
        ModelFamily::Sd1,
        ModelFamily::Sd2,
        ModelFamily::Sdxl,
        ModelFamily::Inpainting,
    ];

    /// Human-readable name ("Stable Diffusion 1.x").
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Sd1 => "Stable Diffusion 1.x",
            ModelFamily::Sd2 => "Stable Diffusion 2.x",
            ModelFamily::Sdxl => "Stable Diffusion XL",
            ModelFamily::Inpainting => "Stable Diffusion inpainting",
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<ModelFamily> for &'static str {
    fn from(f: ModelFamily) -> Self {
        f.name()
    }
}

impl TryFrom<String> for ModelFamily {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ModelFamily::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown model family '{s}'"))
    }
}

impl PartialEq<&str> for ModelFamily {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_serialise_as_their_names() {
        for f in ModelFamily::ALL {
            let json = serde_json::to_string(&f).expect("serialise");
            assert_eq!(json, format!("\"{}\"", f.name()));
            assert_eq!(
                serde_json::from_str::<ModelFamily>(&json).expect("parse"),
                f
            );
        }
        assert!(serde_json::from_str::<ModelFamily>("\"SD 9\"").is_err());
        assert_eq!(ModelFamily::Sdxl, "Stable Diffusion XL");
    }
}
