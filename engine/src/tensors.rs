//! Tensors to and from host data (a leaf module).

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::job::LatentsData;

/// A tensor's values on the host, as f32.
pub fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
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

/// Host latents as a tensor on `device`.
pub fn latents_from_host(latents: &LatentsData, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(latents.values.clone(), latents.shape),
        device,
    )
}
