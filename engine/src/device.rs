//! The one place a compute device is chosen.
//!
//! Backends are Cargo features forwarded to Burn: `cpu` (Burn's `flex` backend, always
//! compiled — the reference for tests), `wgpu` (Vulkan/Metal/DX12 chosen by wgpu), `metal`,
//! `vulkan` and `cuda`. A [`DeviceSpec`] is what a user asks for (`--device`, the window's
//! picker, a training configuration); [`DeviceSpec::open`] turns it into a working Burn
//! device — `auto` tries each GPU backend of the build and falls back to the CPU, saying
//! why — and every job (generation, training, evaluation) opens its device there. Asking
//! for a backend this build lacks is [`Error::DeviceUnavailable`], one that cannot be
//! opened (no adapter, no GPU of that index) [`Error::DeviceNotPresent`]; both list what the
//! build has.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Tensor};
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

    /// Opens the device: `auto` is the first GPU backend of this build that works (each is
    /// probed with a small computation), else the CPU — with a [`OpenedDevice::notice`]
    /// saying which backends failed and why, also logged; any other spec is that backend,
    /// probed, or an error that lists what this build has.
    pub fn open(&self) -> Result<OpenedDevice> {
        let opened = |spec: DeviceSpec, device: Device, notice: Option<String>| {
            tracing::info!(device = %spec, "compute device");
            OpenedDevice {
                spec,
                device,
                notice,
            }
        };
        if *self != DeviceSpec::Auto {
            let device = self.device()?;
            probe(self, &device)?;
            return Ok(opened(self.clone(), device, None));
        }
        let mut failed = Vec::new();
        for name in available() {
            let Ok(spec) = name.parse::<DeviceSpec>() else {
                continue;
            };
            if matches!(spec, DeviceSpec::Cpu | DeviceSpec::Ndarray) {
                break;
            }
            match spec.device().and_then(|d| probe(&spec, &d).map(|()| d)) {
                Ok(device) => return Ok(opened(spec, device, None)),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let notice = (!failed.is_empty()).then(|| {
            format!(
                "no GPU backend could be used, running on the CPU ({})",
                failed.join("; ")
            )
        });
        if let Some(n) = &notice {
            tracing::warn!("{n}");
        }
        Ok(opened(DeviceSpec::Cpu, Device::flex(), notice))
    }

    /// The Burn device, unprobed ([`DeviceSpec::open`] is what jobs use);
    /// [`Error::DeviceUnavailable`] for a backend this build lacks.
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

/// A device a job can run on (see [`DeviceSpec::open`]).
#[derive(Debug, Clone)]
pub struct OpenedDevice {
    /// The backend, never `auto`.
    pub spec: DeviceSpec,
    /// Burn's device.
    pub device: Device,
    /// What the user should hear about the choice (`auto` fell back to the CPU, and why).
    pub notice: Option<String>,
}

/// Runs a tiny computation on `device` (GPU backends create their adapter lazily and panic
/// when there is none): [`Error::DeviceNotPresent`] when it fails.
fn probe(spec: &DeviceSpec, device: &Device) -> Result<()> {
    if is_cpu(device) {
        return Ok(());
    }
    let device = device.clone();
    let run = std::panic::catch_unwind(move || {
        Tensor::<1>::ones([4], &device)
            .sum()
            .into_data()
            .try_to_vec::<f32>()
            .ok()
            .and_then(|v| v.first().copied())
    });
    match run {
        Ok(Some(v)) if (v - 4.0).abs() < 1e-6 => Ok(()),
        Ok(other) => Err(Error::DeviceNotPresent {
            name: spec.to_string(),
            reason: format!("a test computation gave {other:?} instead of 4"),
            available: available().join(", "),
        }),
        Err(panic) => Err(Error::DeviceNotPresent {
            name: spec.to_string(),
            reason: panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "it could not be initialised".into()),
            available: available().join(", "),
        }),
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
    fn opening_resolves_auto_and_refuses_what_the_build_lacks() {
        let cpu = DeviceSpec::Cpu.open().unwrap();
        assert_eq!(cpu.spec, DeviceSpec::Cpu);
        assert!(is_cpu(&cpu.device) && cpu.notice.is_none());
        let auto = DeviceSpec::Auto.open().unwrap();
        assert_ne!(auto.spec, DeviceSpec::Auto, "auto is always resolved");
        if available() == ["cpu"] {
            assert_eq!(auto.spec, DeviceSpec::Cpu);
            assert!(auto.notice.is_none(), "no GPU backend to fall back from");
            for spec in [DeviceSpec::Vulkan, DeviceSpec::Cuda(0), DeviceSpec::Wgpu] {
                let err = spec.open().unwrap_err();
                assert!(
                    matches!(err, Error::DeviceUnavailable { .. })
                        && err.to_string().contains("compiled in: cpu"),
                    "{err}"
                );
            }
        }
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
