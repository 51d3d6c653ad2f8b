//! The one place a compute device is chosen.
//!
//! Backends are Cargo features forwarded to Burn: `cpu` (Burn's `flex` backend, always
//! compiled — the reference for tests), `wgpu` (Vulkan/Metal/DX12 chosen by wgpu), `metal`,
//! `vulkan` and `cuda`. A [`DeviceSpec`] is what a user asks for (`--device`, the window's
//! picker, a recipe); [`DeviceSpec::device`] turns it into a Burn device, and asking for a
//! backend this build lacks is [`Error::DeviceUnavailable`].

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names accepted by [`DeviceSpec::from_str`] (and `--device`), in order of preference for
/// `auto`.
pub const ALL: [&str; 5] = ["cuda", "metal", "vulkan", "wgpu", "cpu"];

/// A compute device as a user names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The first backend of this build in [`ALL`] order.
    #[default]
    Auto,
    /// Burn's `flex` CPU backend.
    Cpu,
    /// An NVIDIA GPU by index (`cuda` = `cuda:0`).
    Cuda(usize),
    /// Apple's Metal, through wgpu.
    Metal,
    /// Vulkan, through wgpu.
    Vulkan,
    /// wgpu's own choice of API.
    Wgpu,
    /// Burn's deprecated ndarray CPU backend (benchmark comparisons only).
    Ndarray,
}

impl FromStr for DeviceSpec {
    type Err = Error;

    /// `auto`, `cpu` (or `flex`), `cuda`, `cuda:N`, `metal`, `vulkan`, `wgpu`, `ndarray`.
    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim().to_ascii_lowercase();
        Ok(match name.as_str() {
            "auto" => DeviceSpec::Auto,
            "cpu" | "flex" => DeviceSpec::Cpu,
            "cuda" => DeviceSpec::Cuda(0),
            "metal" => DeviceSpec::Metal,
            "vulkan" => DeviceSpec::Vulkan,
            "wgpu" => DeviceSpec::Wgpu,
            "ndarray" => DeviceSpec::Ndarray,
            n => match n.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => DeviceSpec::Cuda(i),
                _ => {
                    return Err(Error::InvalidRequest(format!(
                        "unknown device '{name}' (expected one of: auto, {}, cuda:N)",
                        ALL.join(", ")
                    )));
                }
            },
        })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Metal => f.write_str("metal"),
            DeviceSpec::Vulkan => f.write_str("vulkan"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
            DeviceSpec::Ndarray => f.write_str("ndarray"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl DeviceSpec {
    /// The backend `auto` stands for in this build (every other spec is itself).
    pub fn concrete(&self) -> DeviceSpec {
        match self {
            DeviceSpec::Auto => available()
                .first()
                .and_then(|n| n.parse().ok())
                .unwrap_or(DeviceSpec::Cpu),
            d => d.clone(),
        }
    }

    /// The Burn device; [`Error::DeviceUnavailable`] for a backend this build lacks.
    pub fn device(&self) -> Result<Device> {
        let unavailable = || Error::DeviceUnavailable {
            name: self.to_string(),
            available: available().join(", "),
        };
        match self.concrete() {
            DeviceSpec::Auto | DeviceSpec::Cpu => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "vulkan")]
            DeviceSpec::Vulkan => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "metal")]
            DeviceSpec::Metal => Ok(Device::metal(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => Ok(Device::cuda(i)),
            // Deprecated by Burn; compiled only for backend comparisons (`--features ndarray`).
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            DeviceSpec::Ndarray => Ok(Device::ndarray()),
            _ => Err(unavailable()),
        }
    }
}

/// The backends compiled into this build.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "metal") {
        v.push("metal");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v.push("cpu");
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    v
}

/// The device for a backend name (see [`DeviceSpec::from_str`]).
pub fn device(name: &str) -> Result<Device> {
    name.parse::<DeviceSpec>()?.device()
}

/// Whether `device` is a CPU backend (flex or ndarray), where f16 is not faster.
pub fn is_cpu(device: &Device) -> bool {
    #[allow(deprecated)]
    let cpu = *device == Device::flex()
        || (cfg!(feature = "ndarray")
            && format!("{device:?}")
                .to_ascii_lowercase()
                .contains("ndarray"));
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_missing_backends_say_so() {
        assert!(device("cpu").is_ok());
        assert!(available().contains(&"cpu"));
        if !cfg!(feature = "cuda") {
            let err = device("cuda:1")
                .expect_err("cuda not compiled in")
                .to_string();
            assert!(
                err.contains("'cuda:1' is not available in this build"),
                "{err}"
            );
        }
        assert!(matches!(device("tpu"), Err(Error::InvalidRequest(_))));
        assert!(matches!(device("cuda:x"), Err(Error::InvalidRequest(_))));
    }

    #[test]
    fn specs_round_trip_through_their_names() {
        for name in [
            "auto", "cpu", "cuda", "cuda:2", "metal", "vulkan", "wgpu", "ndarray",
        ] {
            let spec: DeviceSpec = name.parse().expect(name);
            assert_eq!(spec.to_string(), name);
            let json = serde_json::to_string(&spec).expect("serialise");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<DeviceSpec>(&json).expect("parse"),
                spec
            );
        }
        assert_eq!("FLEX".parse::<DeviceSpec>().ok(), Some(DeviceSpec::Cpu));
        assert!(serde_json::from_str::<DeviceSpec>("\"tpu\"").is_err());
        assert_eq!(DeviceSpec::Auto.concrete().to_string(), available()[0]);
    }
}
