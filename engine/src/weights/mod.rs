//! Opening the files people have: diffusers folders and single-file SD 1.x checkpoints.
//!
//! [`Checkpoint::open`] classifies a path, refuses what Kiln cannot run with a message that
//! says what it is, and produces, per component, a [`MappedSource`]: the file's tensors seen
//! under diffusers names. The model constructors then load strictly from those sources.

pub mod hash;
pub mod ldm_yaml;
pub mod safetensors;
pub mod save;
pub mod single_file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::family::ModelFamily;
use crate::loader::TensorSource;
use crate::models::config::{
    AutoencoderKLConfig, ClipTextConfig, StableDiffusionConfig, UNet2DConditionConfig, sd15,
};
use crate::schedulers::SchedulerConfig;
use crate::weights::safetensors::SafeTensors;

/// A file's tensors seen under diffusers names through a rename table.
#[derive(Debug, Clone)]
pub struct MappedSource {
    file: Arc<SafeTensors>,
    /// diffusers name → key in the file.
    map: BTreeMap<String, String>,
}

impl MappedSource {
    /// Every tensor of `file` whose key starts with `strip` (or all, for ""), named without it.
    pub fn identity(file: Arc<SafeTensors>, strip: &str) -> Self {
        let map = file
            .tensors()
            .keys()
            .filter(|k| !single_file::is_ignored_key(k))
            .filter_map(|k| k.strip_prefix(strip).map(|d| (d.to_owned(), k.clone())))
            .collect();
        MappedSource { file, map }
    }

    /// A source with an explicit table.
    pub fn with_map(file: Arc<SafeTensors>, map: BTreeMap<String, String>) -> Self {
        MappedSource { file, map }
    }

    /// The file keys this source covers.
    pub fn file_keys(&self) -> impl Iterator<Item = &String> {
        self.map.values()
    }
}

impl TensorSource for MappedSource {
    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.file.info(self.map.get(key)?).map(|i| i.shape.clone())
    }

    fn read(&self, key: &str) -> Result<Vec<f32>> {
        let file_key = self.map.get(key).ok_or_else(|| Error::MissingTensors {
            what: "weights".into(),
            keys: vec![key.to_owned()],
        })?;
        self.file.f32(file_key)
    }

    fn read_data(&self, key: &str, dtype: burn::tensor::DType) -> Result<burn::tensor::TensorData> {
        let file_key = self.map.get(key).ok_or_else(|| Error::MissingTensors {
            what: "weights".into(),
            keys: vec![key.to_owned()],
        })?;
        self.file.tensor_data(file_key, dtype)
    }

    fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }
}

/// How a checkpoint is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// A diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, …).
    Diffusers,
    /// One `.safetensors` file in the original LDM layout.
    SingleFile,
}

/// What was found when opening a checkpoint (shown by `kiln inspect` and the app).
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// The path opened.
    pub path: PathBuf,
    /// Model family.
    pub family: ModelFamily,
    /// Storage layout.
    pub layout: Layout,
    /// Most common weight dtype (F32, F16, BF16).
    pub dtype: String,
    /// The architecture, as diffusers configs.
    pub config: StableDiffusionConfig,
    /// The noise schedule.
    pub scheduler: SchedulerConfig,
    /// Where the configs that shapes cannot tell came from.
    pub config_source: String,
}

impl CheckpointInfo {
    /// The image size the model was made for ([`StableDiffusionConfig::native_size`]).
    pub fn native_size(&self) -> usize {
        self.config.native_size()
    }
}

/// An opened SD 1.x checkpoint: configs plus one tensor source per component.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// What it is.
    pub info: CheckpointInfo,
    /// UNet tensors under diffusers names.
    pub unet: MappedSource,
    /// VAE tensors.
    pub vae: MappedSource,
    /// Text-encoder tensors (transformers names without `text_model.`).
    pub text_encoder: MappedSource,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid config: {e}")))
}

/// Configs read from a diffusers folder's `*/config.json` files.
#[derive(Debug, Clone)]
pub struct FolderConfigs {
    /// `unet/config.json`.
    pub unet: UNet2DConditionConfig,
    /// `vae/config.json`.
    pub vae: AutoencoderKLConfig,
    /// `text_encoder/config.json`.
    pub text_encoder: ClipTextConfig,
    /// `scheduler/scheduler_config.json`, or SD 1.5's when absent.
    pub scheduler: SchedulerConfig,
    /// `model_max_length` of `tokenizer/tokenizer_config.json` (77 when absent), at most the
    /// text encoder's positions (transformers writes a huge number when it is unset).
    pub tokenizer_max_length: usize,
}

impl FolderConfigs {
    /// Reads the configs of the diffusers folder `dir` (weights are not read).
    pub fn read(dir: &Path) -> Result<Self> {
        let need = |rel: &str| {
            let p = dir.join(rel);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::format(
                    dir,
                    format!("not a complete diffusers folder: '{rel}' is missing"),
                ))
            }
        };
        let scheduler_path = dir.join("scheduler/scheduler_config.json");
        let text_encoder: ClipTextConfig = read_json(&need("text_encoder/config.json")?)?;
        let tokenizer_path = dir.join("tokenizer/tokenizer_config.json");
        let tokenizer_max_length = if tokenizer_path.is_file() {
            let t: serde_json::Value = read_json(&tokenizer_path)?;
            match t.get("model_max_length").and_then(|v| v.as_f64()) {
                Some(n) if n < 3.0 => {
                    return Err(Error::format(
                        &tokenizer_path,
                        format!("model_max_length {n} leaves no room for a prompt"),
                    ));
                }
                Some(n) => (n.min(text_encoder.max_position_embeddings as f64)) as usize,
                None => crate::tokenizer::MAX_LENGTH,
            }
        } else {
            crate::tokenizer::MAX_LENGTH
        };
        Ok(FolderConfigs {
            unet: read_json(&need("unet/config.json")?)?,
            vae: read_json(&need("vae/config.json")?)?,
            text_encoder,
            scheduler: if scheduler_path.is_file() {
                read_json(&scheduler_path)?
            } else {
                SchedulerConfig::sd15()
            },
            tokenizer_max_length,
        })
    }
}

/// How a file is opened ([`SafeTensors::open_lazy`] for checkpoints).
type Reader = fn(&Path) -> Result<SafeTensors>;

fn open_component(
    dir: &Path,
    component: &str,
    names: &[&str],
    read: Reader,
) -> Result<Arc<SafeTensors>> {
    for name in names {
        let p = dir.join(component).join(name);
        if p.is_file() {
            return Ok(Arc::new(read(&p)?));
        }
    }
    let bin = dir
        .join(component)
        .join(names[0].replace(".safetensors", ".bin"));
    if bin.is_file() {
        return Err(Error::PickleCheckpoint { path: bin });
    }
    Err(Error::format(
        dir,
        format!(
            "not a complete diffusers folder: '{component}/{}' is missing",
            names[0]
        ),
    ))
}

fn refuse_family(what: &Path, family: ModelFamily) -> Error {
    Error::UnsupportedFamily {
        what: what.display().to_string(),
        family,
    }
}

impl Checkpoint {
    /// Opens a diffusers folder or single-file checkpoint. `config_dir` optionally names a
    /// diffusers folder whose configs describe a single file (heads, groups, scaling factor).
    /// Only the files' headers are read here (enough for the [`CheckpointInfo`] that `kiln
    /// inspect` shows, without reading gigabytes); each tensor is read from its file when a
    /// model asks for it, so loading never holds the whole file beside the model.
    pub fn open(path: &Path, config_dir: Option<&Path>) -> Result<Self> {
        Self::open_with(path, config_dir, SafeTensors::open_lazy)
    }

    fn open_with(path: &Path, config_dir: Option<&Path>, read: Reader) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
        if path.is_dir() {
            Self::open_diffusers(path, read)
        } else {
            Self::open_single_file(path, config_dir, read)
        }
    }

    fn open_diffusers(dir: &Path, read: Reader) -> Result<Self> {
        let index_path = dir.join("model_index.json");
        if !index_path.is_file() {
            return Err(Error::format(
                dir,
                "not a diffusers folder: 'model_index.json' is missing",
            ));
        }
        let index: serde_json::Value = read_json(&index_path)?;
        let class = index
            .get("_class_name")
            .and_then(|c| c.as_str())
            .unwrap_or("");
        match class {
            "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline" | "" => {}
            c if c.contains("XL") => return Err(refuse_family(dir, ModelFamily::Sdxl)),
            c if c.contains("Inpaint") => {
                return Err(refuse_family(dir, ModelFamily::Inpainting));
            }
            c => {
                return Err(Error::UnsupportedModel {
                    what: dir.display().to_string(),
                    kind: format!("pipeline class '{c}'"),
                });
            }
        }
        let configs = FolderConfigs::read(dir)?;
        if configs.unet.in_channels == 9 {
            return Err(refuse_family(dir, ModelFamily::Inpainting));
        }
        if configs.unet.cross_attention_dim == 1024 {
            return Err(refuse_family(dir, ModelFamily::Sd2));
        }
        let unet = open_component(
            dir,
            "unet",
            &[
                "diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model.fp16.safetensors",
            ],
            read,
        )?;
        let vae = open_component(
            dir,
            "vae",
            &[
                "diffusion_pytorch_model.safetensors",
                "diffusion_pytorch_model.fp16.safetensors",
            ],
            read,
        )?;
        let text = open_component(
            dir,
            "text_encoder",
            &["model.safetensors", "model.fp16.safetensors"],
            read,
        )?;
        // transformers ≤ 4 saves `text_model.*`; transformers 5 drops the prefix.
        let text_prefix = if text
            .info("text_model.embeddings.token_embedding.weight")
            .is_some()
        {
            "text_model."
        } else {
            ""
        };
        let dtype = unet
            .main_dtype()
            .map(|d| d.name())
            .unwrap_or("unknown")
            .to_owned();
        let info = CheckpointInfo {
            path: dir.to_owned(),
            family: ModelFamily::Sd1,
            layout: Layout::Diffusers,
            dtype,
            config: StableDiffusionConfig {
                unet: configs.unet,
                vae: configs.vae,
                text_encoder: configs.text_encoder,
                tokenizer_max_length: configs.tokenizer_max_length,
            },
            scheduler: configs.scheduler,
            config_source: "the folder's config.json files".into(),
        };
        Ok(Checkpoint {
            info,
            unet: MappedSource::identity(unet, ""),
            vae: MappedSource::identity(vae, ""),
            text_encoder: MappedSource::identity(text, text_prefix),
        })
    }

    fn open_single_file(path: &Path, config_dir: Option<&Path>, read: Reader) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin") {
            return Err(Error::PickleCheckpoint {
                path: path.to_owned(),
            });
        }
        let file = Arc::new(read(path)?);
        let family = single_file::family(&file).ok_or_else(|| {
            Error::format(path, "not a Stable Diffusion checkpoint (no 'model.diffusion_model.*' tensors); `kiln inspect` tells what it is")
        })?;
        if family != ModelFamily::Sd1 {
            return Err(refuse_family(path, family));
        }
        let given = config_dir.map(FolderConfigs::read).transpose()?;
        let (config, scheduler, config_source) = match given {
            Some(c) => (
                StableDiffusionConfig {
                    unet: c.unet,
                    vae: c.vae,
                    text_encoder: c.text_encoder,
                    tokenizer_max_length: c.tokenizer_max_length,
                },
                c.scheduler,
                format!(
                    "configs from {}",
                    config_dir
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ),
            ),
            None => {
                let sd = sd15();
                let mut config = StableDiffusionConfig {
                    unet: single_file::infer_unet(&file, &sd.unet)?,
                    vae: single_file::infer_vae(&file, &sd.vae)?,
                    text_encoder: single_file::infer_clip(&file, None)?,
                    tokenizer_max_length: crate::tokenizer::MAX_LENGTH,
                };
                let mut scheduler = SchedulerConfig::sd15();
                // A1111's convention: `model.yaml` beside `model.safetensors`.
                let yaml = path.with_extension("yaml");
                let source = if yaml.is_file() {
                    ldm_yaml::LdmYaml::read(&yaml)?.apply(&mut config, &mut scheduler);
                    format!("inferred from tensor shapes and {}", yaml.display())
                } else {
                    "inferred from tensor shapes; heads, norm groups and scaling factor are SD 1.5's".into()
                };
                (config, scheduler, source)
            }
        };
        let lpb = config.unet.layers_per_block;
        let levels = config.vae.block_out_channels.len();
        let unet = MappedSource::with_map(
            file.clone(),
            single_file::component_map(&file, single_file::UNET_PREFIX, |k| {
                single_file::unet_key(k, lpb)
            }),
        );
        let vae = MappedSource::with_map(
            file.clone(),
            single_file::component_map(&file, single_file::VAE_PREFIX, |k| {
                single_file::vae_key(k, levels)
            }),
        );
        let clip_prefix = single_file::clip_prefix(&file);
        let text_encoder = MappedSource::with_map(
            file.clone(),
            single_file::component_map(&file, clip_prefix, |k| Some(k.to_owned())),
        );
        // Every tensor must belong to a component or be a known leftover.
        let covered: std::collections::BTreeSet<&String> = unet
            .file_keys()
            .chain(vae.file_keys())
            .chain(text_encoder.file_keys())
            .collect();
        let unused: Vec<String> = file
            .tensors()
            .keys()
            .filter(|k| !single_file::is_ignored_key(k) && !covered.contains(k))
            .cloned()
            .collect();
        if !unused.is_empty() {
            return Err(Error::UnusedTensors {
                what: path.display().to_string(),
                keys: unused,
            });
        }
        let dtype = file
            .main_dtype()
            .map(|d| d.name())
            .unwrap_or("unknown")
            .to_owned();
        let info = CheckpointInfo {
            path: path.to_owned(),
            family,
            layout: Layout::SingleFile,
            dtype,
            config,
            scheduler,
            config_source,
        };
        Ok(Checkpoint {
            info,
            unet,
            vae,
            text_encoder,
        })
    }
}
