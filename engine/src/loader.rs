//! Strict loading of model parameters by their diffusers names.
//!
//! Model constructors ask a [`Loader`] for each parameter by its full diffusers path
//! (`down_blocks.0.resnets.0.conv1.weight`) and the shape the config implies. The loader
//! reads it from a [`TensorSource`] (a diffusers file, or a single-file checkpoint seen
//! through its key remap table) or, for a model built from a config alone, initialises it
//! randomly. It records every missing, mis-shaped and unused tensor, and [`Loader::finish`]
//! turns them into one error that names them all, so a wrong file never half-loads.
//!
//! A loader creates its tensors in one float type ([`Loader::with_dtype`]): a half-precision
//! model is read from an f16 file straight into f16 tensors, one tensor at a time, with no f32
//! copy of the model on the way.

use std::collections::BTreeSet;

use burn::tensor::{DType, Device, Tensor, TensorData};
use half::{bf16, f16};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result, ShapeMismatch};

/// A named collection of tensors, addressed by diffusers names.
pub trait TensorSource {
    /// Shape of the tensor named `key`, if present.
    fn shape(&self, key: &str) -> Option<Vec<usize>>;
    /// Reads the tensor named `key` as f32.
    fn read(&self, key: &str) -> Result<Vec<f32>>;
    /// Reads the tensor named `key` as `dtype` (F32, F16 or BF16), in its stored shape.
    /// Sources that store half-precision values override this to skip the f32 copy.
    fn read_data(&self, key: &str, dtype: DType) -> Result<TensorData> {
        let shape = self.shape(key).unwrap_or_default();
        Ok(TensorData::new(self.read(key)?, shape).convert_dtype(dtype))
    }
    /// Every tensor name this source offers (diffusers names).
    fn keys(&self) -> Vec<String>;
}

/// How a parameter is initialised when the model is built from its config alone.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Uniform in ±1/√fan_in, fan_in = product of all dims but the first (PyTorch's default).
    FanIn,
    /// Uniform in ±1/√fan_in for a Burn-layout linear weight `[in, out]`.
    FanInLinear,
    /// All zeros (biases).
    Zeros,
    /// All ones (norm scales).
    Ones,
    /// Normal with the given standard deviation (embeddings).
    Normal(f32),
}

enum Fill<'a> {
    Source(&'a dyn TensorSource),
    Random(Box<ChaCha8Rng>),
}

/// Hands out parameters by name and keeps a strict account of what was used.
pub struct Loader<'a> {
    fill: Fill<'a>,
    /// Replaces the standard deviation of [`Init::Normal`] when drawing at random.
    embedding_std: Option<f32>,
    device: Device,
    /// The float type every tensor is created in.
    dtype: DType,
    used: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<ShapeMismatch>,
    errors: Vec<Error>,
}

impl<'a> Loader<'a> {
    /// A loader that reads every parameter from `source`.
    pub fn from_source(source: &'a dyn TensorSource, device: &Device) -> Self {
        Self::new(Fill::Source(source), device)
    }

    /// A loader that initialises every parameter randomly from `seed` (models built from a config).
    pub fn random(seed: u64, device: &Device) -> Self {
        Self::new(
            Fill::Random(Box::new(ChaCha8Rng::seed_from_u64(seed))),
            device,
        )
    }

    fn new(fill: Fill<'a>, device: &Device) -> Self {
        Loader {
            fill,
            embedding_std: None,
            device: device.clone(),
            dtype: DType::F32,
            used: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Draws the [`Init::Normal`] parameters (the embeddings) with standard deviation `std`
    /// instead of the layer's own (CLIP's 0.02); the same random numbers, scaled, so every
    /// other parameter is as it would be without this. No effect when reading from a source.
    pub fn with_embedding_std(mut self, std: f32) -> Self {
        self.embedding_std = Some(std);
        self
    }

    /// Creates every tensor as `dtype` (F32 by default; F16 or BF16 for a half-precision
    /// model). Values stored in that type are used as they are; others are rounded to it.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Fetches the parameter `key` with the given shape. On any problem the problem is
    /// recorded (see [`Loader::finish`]) and a zero tensor is returned so construction can
    /// continue and report every problem at once.
    pub fn tensor<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        init: Init,
    ) -> Tensor<D> {
        let dtype = self.dtype;
        let data = match &mut self.fill {
            Fill::Random(rng) => Some(
                TensorData::new(
                    random_values(
                        rng,
                        &shape,
                        match (init, self.embedding_std) {
                            (Init::Normal(_), Some(std)) => Init::Normal(std),
                            _ => init,
                        },
                    ),
                    shape,
                )
                .convert_dtype(dtype),
            ),
            Fill::Source(source) => match source.shape(key) {
                None => {
                    self.missing.push(key.to_owned());
                    None
                }
                Some(got) => {
                    self.used.insert(key.to_owned());
                    // A linear weight stored as a 1×1 conv ([out, in, 1, 1], as in LDM VAE
                    // attention) has the same values as the [out, in] matrix.
                    let squeezed: Vec<usize> = {
                        let mut g = got.clone();
                        while g.len() > D && g.last() == Some(&1) {
                            g.pop();
                        }
                        g
                    };
                    let expected_file_shape: Vec<usize> = match init {
                        // Burn keeps linear weights as [in, out]; files hold PyTorch's [out, in].
                        Init::FanInLinear => vec![shape[1], shape[0]],
                        _ => shape.to_vec(),
                    };
                    if squeezed != expected_file_shape {
                        self.mismatched.push(ShapeMismatch {
                            key: key.to_owned(),
                            expected: expected_file_shape,
                            got,
                        });
                        None
                    } else {
                        let read = source.read_data(key, dtype).and_then(|d| match init {
                            Init::FanInLinear => transpose(d, shape[1], shape[0]),
                            _ => reshape(d, &shape),
                        });
                        match read {
                            Ok(d) => Some(d),
                            Err(e) => {
                                self.errors.push(e);
                                None
                            }
                        }
                    }
                }
            },
        };
        let data = data.unwrap_or_else(|| TensorData::zeros::<f32, _>(shape).convert_dtype(dtype));
        Tensor::from_data(data, (&self.device, dtype))
    }

    /// Ends loading: an error naming every missing, mis-shaped or unused tensor, if any.
    /// `what` names the component in messages ("UNet", "VAE", …).
    pub fn finish(self, what: &str) -> Result<()> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        if !self.mismatched.is_empty() {
            return Err(Error::ShapeMismatch {
                what: what.to_owned(),
                mismatches: self.mismatched,
            });
        }
        if !self.missing.is_empty() {
            return Err(Error::MissingTensors {
                what: what.to_owned(),
                keys: self.missing,
            });
        }
        if let Fill::Source(source) = self.fill {
            let unused: Vec<String> = source
                .keys()
                .into_iter()
                .filter(|k| !self.used.contains(k))
                .collect();
            if !unused.is_empty() {
                return Err(Error::UnusedTensors {
                    what: what.to_owned(),
                    keys: unused,
                });
            }
        }
        Ok(())
    }
}

/// `data` (`rows × cols`, any float type) transposed to `[cols, rows]`.
fn transpose(data: TensorData, rows: usize, cols: usize) -> Result<TensorData> {
    fn t<E: burn::tensor::Element>(v: &[E], rows: usize, cols: usize) -> Vec<E> {
        let mut out = Vec::with_capacity(v.len());
        for c in 0..cols {
            out.extend((0..rows).map(|r| v[r * cols + c]));
        }
        out
    }
    let bad = |e: burn::tensor::DataError| Error::InvalidRequest(format!("tensor data: {e:?}"));
    Ok(match data.dtype() {
        DType::F16 => TensorData::new(
            t(data.as_slice::<f16>().map_err(bad)?, rows, cols),
            [cols, rows],
        ),
        DType::BF16 => TensorData::new(
            t(data.as_slice::<bf16>().map_err(bad)?, rows, cols),
            [cols, rows],
        ),
        _ => TensorData::new(
            t(
                &data
                    .convert_dtype(DType::F32)
                    .try_to_vec::<f32>()
                    .map_err(bad)?,
                rows,
                cols,
            ),
            [cols, rows],
        ),
    })
}

/// `data` with the loader's `shape` (a squeezed 1×1 conv has the stored values in another
/// shape).
fn reshape(data: TensorData, shape: &[usize]) -> Result<TensorData> {
    let (bytes, _, dtype) = data.into_parts();
    Ok(TensorData::from_bytes(bytes, shape.to_vec(), dtype))
}

fn random_values(rng: &mut ChaCha8Rng, shape: &[usize], init: Init) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let fan_in = |dims: &[usize]| dims.iter().product::<usize>().max(1) as f32;
    match init {
        Init::Zeros => vec![0.0; numel],
        Init::Ones => vec![1.0; numel],
        Init::Normal(std) => (0..numel)
            .map(|_| {
                let z: f32 = StandardNormal.sample(rng);
                std * z
            })
            .collect(),
        Init::FanIn | Init::FanInLinear => {
            let fan = match init {
                Init::FanInLinear => shape[0] as f32,
                _ => fan_in(&shape[1..]),
            };
            let bound = 1.0 / fan.sqrt();
            (0..numel)
                .map(|_| rng.random_range(-bound..bound))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Tensors in memory: name → (shape, values).
    struct Memory(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

    impl Memory {
        fn new(tensors: &[(&str, &[usize])]) -> Self {
            Memory(
                tensors
                    .iter()
                    .map(|(k, shape)| {
                        let n: usize = shape.iter().product();
                        (
                            (*k).to_owned(),
                            (shape.to_vec(), (0..n).map(|i| i as f32).collect()),
                        )
                    })
                    .collect(),
            )
        }
    }

    impl TensorSource for Memory {
        fn shape(&self, key: &str) -> Option<Vec<usize>> {
            self.0.get(key).map(|(s, _)| s.clone())
        }
        fn read(&self, key: &str) -> Result<Vec<f32>> {
            Ok(self.0[key].1.clone())
        }
        fn keys(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn linear_weights_are_transposed_and_1x1_convs_squeezed() {
        let device = Device::flex();
        let source = Memory::new(&[("proj.weight", &[3, 2]), ("attn.weight", &[2, 2, 1, 1])]);
        let mut ld = Loader::from_source(&source, &device);
        // File [out 3, in 2] = [[0,1],[2,3],[4,5]] → Burn [in 2, out 3].
        let w: Tensor<2> = ld.tensor("proj.weight", [2, 3], Init::FanInLinear);
        assert_eq!(values(w), [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        let a: Tensor<2> = ld.tensor("attn.weight", [2, 2], Init::FanIn);
        assert_eq!(values(a), [0.0, 1.0, 2.0, 3.0]);
        ld.finish("test").unwrap();
    }

    #[test]
    fn a_half_precision_loader_makes_half_tensors_with_the_rounded_values() {
        let device = Device::flex();
        let source = Memory::new(&[("proj.weight", &[3, 2]), ("norm.weight", &[4])]);
        for dtype in [DType::F16, DType::BF16] {
            let mut ld = Loader::from_source(&source, &device).with_dtype(dtype);
            let w: Tensor<2> = ld.tensor("proj.weight", [2, 3], Init::FanInLinear);
            let n: Tensor<1> = ld.tensor("norm.weight", [4], Init::Ones);
            let missing: Tensor<1> = ld.tensor("absent", [2], Init::Zeros);
            assert_eq!(
                (w.dtype(), n.dtype(), missing.dtype()),
                (dtype, dtype, dtype)
            );
            assert_eq!(values(w), [0.0, 2.0, 4.0, 1.0, 3.0, 5.0], "{dtype:?}");
            assert_eq!(values(n), [0.0, 1.0, 2.0, 3.0]);
            assert!(
                ld.finish("test").is_err(),
                "the missing tensor is still named"
            );
        }
        // Values f16 cannot hold exactly are rounded as a cast would round them.
        let mut exact = Memory::new(&[("x", &[2])]);
        exact.0.insert("x".into(), (vec![2], vec![0.1, 70000.0]));
        let mut ld = Loader::from_source(&exact, &device).with_dtype(DType::F16);
        let x: Tensor<1> = ld.tensor("x", [2], Init::FanIn);
        let cast = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 70000.0], [2]), &device)
            .cast(burn::tensor::FloatDType::F16);
        assert_eq!(values(x), values(cast));
        // A random model drawn in f16 is the f32 draw, rounded.
        let draw = |dtype| {
            let mut ld = Loader::random(3, &device).with_dtype(dtype);
            let t: Tensor<2> = ld.tensor("w", [8, 4], Init::FanInLinear);
            t
        };
        assert_eq!(
            values(draw(DType::F16)),
            values(draw(DType::F32).cast(burn::tensor::FloatDType::F16))
        );
    }

    #[test]
    fn every_missing_and_mismatched_tensor_is_named_at_once() {
        let device = Device::flex();
        let source = Memory::new(&[("a.weight", &[4]), ("b.weight", &[2, 3])]);
        let mut ld = Loader::from_source(&source, &device);
        let _: Tensor<1> = ld.tensor("a.weight", [5], Init::Ones);
        let _: Tensor<2> = ld.tensor("b.weight", [3, 2], Init::FanIn);
        let missing: Tensor<1> = ld.tensor("c.bias", [2], Init::Zeros);
        assert_eq!(
            values(missing),
            [0.0, 0.0],
            "construction continues on zeros"
        );
        match ld.finish("UNet") {
            Err(Error::ShapeMismatch { what, mismatches }) => {
                assert_eq!(what, "UNet");
                let keys: Vec<_> = mismatches.iter().map(|m| m.key.as_str()).collect();
                assert_eq!(keys, ["a.weight", "b.weight"]);
                assert_eq!(mismatches[0].expected, [5]);
                assert_eq!(mismatches[0].got, [4]);
            }
            other => panic!("{other:?}"),
        }
        // With the shapes right, the missing one is reported.
        let mut ld = Loader::from_source(&source, &device);
        let _: Tensor<1> = ld.tensor("a.weight", [4], Init::Ones);
        let _: Tensor<2> = ld.tensor("b.weight", [2, 3], Init::FanIn);
        let _: Tensor<1> = ld.tensor("c.bias", [2], Init::Zeros);
        let _: Tensor<1> = ld.tensor("d.bias", [2], Init::Zeros);
        assert!(matches!(
            ld.finish("VAE"),
            Err(Error::MissingTensors { keys, .. }) if keys == ["c.bias", "d.bias"]
        ));
    }

    #[test]
    fn a_tensor_the_model_never_asks_for_is_an_error() {
        let device = Device::flex();
        let source = Memory::new(&[("a.weight", &[2]), ("extra.weight", &[1])]);
        let mut ld = Loader::from_source(&source, &device);
        let _: Tensor<1> = ld.tensor("a.weight", [2], Init::Ones);
        assert!(matches!(
            ld.finish("text encoder"),
            Err(Error::UnusedTensors { keys, .. }) if keys == ["extra.weight"]
        ));
    }

    #[test]
    fn random_init_is_seeded_and_follows_the_init_kind() {
        let device = Device::flex();
        let draw = |seed, std: Option<f32>| {
            let mut ld = Loader::random(seed, &device);
            if let Some(s) = std {
                ld = ld.with_embedding_std(s);
            }
            let w: Tensor<2> = ld.tensor("w", [16, 8], Init::FanInLinear);
            let e: Tensor<1> = ld.tensor("e", [64], Init::Normal(0.02));
            let z: Tensor<1> = ld.tensor("z", [3], Init::Zeros);
            let o: Tensor<1> = ld.tensor("o", [3], Init::Ones);
            ld.finish("random").unwrap();
            (values(w), values(e), values(z), values(o))
        };
        let (w, e, z, o) = draw(1, None);
        assert_eq!(draw(1, None).0, w, "same seed, same weights");
        assert_ne!(draw(2, None).0, w);
        let bound = 1.0 / 16f32.sqrt();
        assert!(w.iter().all(|v| v.abs() < bound) && w.iter().any(|v| v.abs() > bound / 2.0));
        assert!(e.iter().all(|v| v.abs() < 0.02 * 6.0));
        assert_eq!((z, o), (vec![0.0; 3], vec![1.0; 3]));
        // Another embedding std scales the same draws and leaves the rest as it was.
        let (w2, e2, _, _) = draw(1, Some(1.0));
        assert_eq!(w2, w);
        for (a, b) in e.iter().zip(&e2) {
            assert!((a * 50.0 - b).abs() < 1e-5, "{a} {b}");
        }
    }
}
