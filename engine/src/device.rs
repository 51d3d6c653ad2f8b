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
                // A software rasteriser (Mesa's lavapipe or llvmpipe) runs tens of times
                // slower than the CPU backend: `auto` passes it by (`--device vulkan` still
                // takes it, as CI's tests do).
                Ok(device) => match software_adapter(&device) {
                    Some(name) => failed.push(format!(
                        "{spec}: only a software adapter ({name}), slower than the CPU backend"
                    )),
                    None => return Ok(opened(spec, device, None)),
                },
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

/// The adapter's name when `device` is a GPU backend running on no card (a software
/// rasteriser); `None` for real GPUs and the CPU backends.
fn software_adapter(device: &Device) -> Option<String> {
    if is_cpu(device) {
        return None;
    }
    #[cfg(any(
        feature = "wgpu",
        feature = "vulkan",
        feature = "metal",
        feature = "cuda"
    ))]
    {
        let id = device.identity()?;
        id.physical.is_none().then_some(id.name)
    }
    #[cfg(not(any(
        feature = "wgpu",
        feature = "vulkan",
        feature = "metal",
        feature = "cuda"
    )))]
    None
}

/// A short name of `device`'s backend for messages: `cpu`, `cuda`, `metal`, `vulkan` or
/// `wgpu`.
pub fn backend_name(device: &Device) -> &'static str {
    if is_cpu(device) {
        return "cpu";
    }
    let debug = format!("{device:?}").to_ascii_lowercase();
    ["cuda", "metal", "vulkan"]
        .into_iter()
        .find(|n| debug.contains(n))
        .unwrap_or("wgpu")
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
            reason: crate::error::panic_text(panic.as_ref())
                .unwrap_or_else(|| "it could not be initialised".into()),
            available: available().join(", "),
        }),
    }
}

/// Reads what a GPU backend said when a job failed — a panic payload or a read-back error —
/// and names it: [`Error::OutOfMemory`] (with the allocation's size when the backend gave
/// it) or [`Error::DeviceLost`]; `None` for anything else. `device` names the device in the
/// message; `half` says whether the job already ran in half precision.
pub fn classify_failure(text: &str, device: &str, half: bool) -> Option<Error> {
    let lower = text.to_ascii_lowercase();
    const OOM: [&str; 6] = [
        "out of device memory",
        "out of memory",
        "outofmemory",
        "can't allocate buffer",
        "cuda allocation error",
        "no staging buffer could be allocated",
    ];
    if lower.contains("device is poisoned")
        || lower.contains("device was lost")
        || lower.contains("device lost")
    {
        return Some(Error::DeviceLost {
            device: device.to_owned(),
            detail: text.lines().last().unwrap_or(text).trim().to_owned(),
        });
    }
    if OOM.iter().any(|p| lower.contains(p)) {
        // CubeCL: "out of device memory allocating {size} bytes"; "can't allocate buffer of
        // size: {size}".
        let asked = ["allocating ", "size: "].iter().find_map(|marker| {
            let at = lower.find(marker)? + marker.len();
            let digits: String = lower[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        });
        return Some(Error::OutOfMemory {
            device: device.to_owned(),
            asked,
            half,
        });
    }
    None
}

/// Waits for the work queued on `device`: GPU backends run asynchronously, so a step's time
/// (and a progress bar) means something only after it. A device fault (a lost GPU) is
/// [`Error::DeviceLost`]; on the CPU backends this does nothing.
pub fn sync(device: &Device) -> Result<()> {
    if is_cpu(device) {
        return Ok(());
    }
    device.sync().map_err(|e| {
        let text = e.to_string();
        let name = backend_name(device);
        classify_failure(&text, name, false).unwrap_or(Error::DeviceLost {
            device: name.to_owned(),
            detail: text,
        })
    })
}

/// The device's memory in use now and the most it has reserved (bytes), for the log; `None`
/// on the CPU backends, which do not keep a pool.
pub fn memory_in_use(device: &Device) -> Option<(u64, u64)> {
    let usage = device.memory_pool_usage()?;
    let peak: u64 = device
        .memory_pool_report()
        .unwrap_or_default()
        .iter()
        .map(|p| p.pages_peak * p.page_size)
        .sum();
    Some((usage.bytes_in_use, peak.max(usage.bytes_reserved)))
}

/// Logs the device's memory (in use now, most reserved) after `what`; nothing on the CPU.
pub fn log_memory(device: &Device, what: &str) {
    if let Some((in_use, peak)) = memory_in_use(device) {
        tracing::info!(
            in_use_mib = in_use / (1 << 20),
            peak_reserved_mib = peak / (1 << 20),
            "device memory after {what}"
        );
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
    fn gpu_failures_are_named_from_what_the_backend_said() {
        // CubeCL's texts (cubecl-runtime server errors, wgpu's uncaptured error, CUDA).
        let oom = classify_failure(
            "Error while reading data: An IO error happened\nCaused by:\n  out of device memory allocating 3221225472 bytes",
            "vulkan",
            false,
        );
        match oom {
            Some(
                ref e @ Error::OutOfMemory {
                    asked: Some(3221225472),
                    half: false,
                    ..
                },
            ) => {
                let m = e.to_string();
                assert!(
                    m.contains("vulkan device ran out of memory (asked for 3072.0 MiB more)"),
                    "{m}"
                );
                assert!(m.contains("f16 precision"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let e = classify_failure("wgpu error: Out of Memory", "wgpu", true).expect("oom");
        assert!(matches!(
            e,
            Error::OutOfMemory {
                asked: None,
                half: true,
                ..
            }
        ));
        assert!(!e.to_string().contains("f16"), "already half: {e}");
        assert!(matches!(
            classify_failure("can't allocate buffer of size: 123", "cuda", true),
            Some(Error::OutOfMemory {
                asked: Some(123),
                ..
            })
        ));
        let lost = classify_failure(
            "The device is poisoned\nCaused by:\n  Lost: driver reset",
            "vulkan",
            true,
        )
        .expect("lost");
        assert!(
            matches!(lost, Error::DeviceLost { ref detail, .. } if detail == "Lost: driver reset")
        );
        assert_eq!(lost.kind(), crate::error::ErrorKind::DeviceLost);
        assert!(classify_failure("index out of bounds: the len is 3", "cpu", false).is_none());
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
