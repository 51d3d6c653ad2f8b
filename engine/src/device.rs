//! The one place a compute device is chosen.
//!
//! Backends are Cargo features forwarded to Burn: `cpu` (Burn's `flex` backend, always
//! compiled — the reference for tests), `wgpu` (Vulkan/Metal/DX12 chosen by wgpu), `metal`,
//! `vulkan` and `cuda`. Asking for a backend this build lacks is [`Error::DeviceUnavailable`].

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Names accepted by [`device`] (and `--device`), in order of preference for "auto".
pub const ALL: [&str; 5] = ["cuda", "metal", "vulkan", "wgpu", "cpu"];

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

/// The device for a backend name (`cpu`, `wgpu`, `metal`, `vulkan`, `cuda`, or `auto` for
/// the first available in [`ALL`] order).
pub fn device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let unavailable = || Error::DeviceUnavailable {
        name: name.clone(),
        available: available().join(", "),
    };
    match name.as_str() {
        "auto" => device(available()[0]),
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "metal")]
        "metal" => Ok(Device::metal(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        // Deprecated by Burn; compiled only for backend comparisons (`--features ndarray`).
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        n if ALL.contains(&n) => Err(unavailable()),
        _ => Err(Error::InvalidRequest(format!(
            "unknown device '{name}' (expected one of: auto, {})",
            ALL.join(", ")
        ))),
    }
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
            let err = device("cuda")
                .expect_err("cuda not compiled in")
                .to_string();
            assert!(err.contains("not available in this build"), "{err}");
        }
        assert!(matches!(device("tpu"), Err(Error::InvalidRequest(_))));
    }
}
