//! Tensors to and from host data (a leaf module).

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::job::LatentsData;

/// A tensor's values on the host, as f32 (converted from a half-precision tensor). A GPU that
/// failed while computing it says so here: [`Error::OutOfMemory`] or [`Error::DeviceLost`]
/// (see [`crate::device::classify_failure`]).
pub fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let device = t.device();
    let half = t.dtype() != burn::tensor::DType::F32;
    let data = t.try_into_data().map_err(|e| {
        let text = e.to_string();
        let name = crate::device::backend_name(&device);
        if let Some(named) = crate::device::classify_failure(&text, name, half) {
            device.memory_cleanup();
            return named;
        }
        Error::InvalidRequest(format!("the device failed computing a tensor: {text}"))
    })?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidRequest(format!("reading a tensor: {e:?}")))
}

/// Copies latents `[B, C, h, w]` to the host.
pub fn latents_to_host(t: Tensor<4>) -> Result<LatentsData> {
    let shape = t.dims();
    Ok(LatentsData {
        shape,
        values: host(t)?,
    })
}

/// Host latents as a tensor on `device`; [`Error::InvalidRequest`] when the values do not
/// fill the shape (latents come from requests and files).
pub fn latents_from_host(latents: &LatentsData, device: &Device) -> Result<Tensor<4>> {
    let expected = latents
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d));
    if expected != Some(latents.values.len()) {
        return Err(Error::InvalidRequest(format!(
            "latents of shape {:?} need {} values, got {}",
            latents.shape,
            expected.map_or_else(|| "too many".to_owned(), |n| n.to_string()),
            latents.values.len()
        )));
    }
    Ok(Tensor::from_data(
        TensorData::new(latents.values.clone(), latents.shape),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latents_that_do_not_fill_their_shape_are_refused() {
        let device = Device::flex();
        let short = LatentsData {
            shape: [1, 4, 2, 2],
            values: vec![0.0; 15],
        };
        let err = latents_from_host(&short, &device).unwrap_err();
        assert!(err.to_string().contains("need 16 values, got 15"), "{err}");
        let huge = LatentsData {
            shape: [usize::MAX, 4, 2, 2],
            values: vec![0.0; 16],
        };
        assert!(latents_from_host(&huge, &device).is_err());
        let ok = LatentsData {
            values: vec![0.5; 16],
            ..short
        };
        let t = latents_from_host(&ok, &device).unwrap();
        assert_eq!(latents_to_host(t).unwrap(), ok);
    }
}
