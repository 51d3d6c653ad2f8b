//! [`Sampler`]: the user's choice of sampler and its options, by the names the CLI, the app
//! and AUTOMATIC1111 use, and the [`Scheduler`] it builds.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schedulers::ddim::DdimScheduler;
use crate::schedulers::ddpm::DdpmScheduler;
use crate::schedulers::dpm_solver_multistep::{DpmAlgorithm, DpmSolverMultistepScheduler};
use crate::schedulers::dpmpp_2s_ancestral::DpmPp2sAncestralScheduler;
use crate::schedulers::euler::EulerScheduler;
use crate::schedulers::euler_ancestral::EulerAncestralScheduler;
use crate::schedulers::heun::HeunScheduler;
use crate::schedulers::lcm::LcmScheduler;
use crate::schedulers::lms::LmsScheduler;
use crate::schedulers::unipc_multistep::UniPcMultistepScheduler;
use crate::schedulers::{Schedule, Scheduler, SchedulerConfig};

/// The sampler and its options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Sampler {
    /// DDIM with η.
    Ddim {
        /// 0 = deterministic.
        eta: f64,
    },
    /// DDPM (diffusers' `DDPMScheduler`; stochastic, seeded).
    Ddpm,
    /// Euler (diffusers' `EulerDiscreteScheduler`).
    Euler {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// Euler a (diffusers' `EulerAncestralDiscreteScheduler`; stochastic, seeded).
    #[serde(rename = "euler-a")]
    EulerAncestral {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// Heun (diffusers' `HeunDiscreteScheduler`; two UNet calls per step).
    Heun {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// LMS (diffusers' `LMSDiscreteScheduler`, order 4).
    Lms {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// DPM++ 2M (diffusers' `DPMSolverMultistepScheduler`, dpmsolver++, order 2).
    #[serde(rename = "dpmpp-2m")]
    DpmPp2m {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// DPM++ 2M SDE (`DPMSolverMultistepScheduler`, sde-dpmsolver++; stochastic, seeded).
    #[serde(rename = "dpmpp-2m-sde")]
    DpmPp2mSde {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// DPM++ 2S a (k-diffusion; two UNet calls per step; stochastic, seeded).
    #[serde(rename = "dpmpp-2s-a")]
    DpmPp2sAncestral {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// UniPC (diffusers' `UniPCMultistepScheduler`, bh2, order 2).
    #[serde(rename = "unipc")]
    UniPc {
        /// Sigma spacing.
        schedule: Schedule,
    },
    /// LCM (diffusers' `LCMScheduler`; for LCM models/LoRAs; stochastic, seeded).
    Lcm,
}

/// Which sampler, without its options: what a menu lists and a settings file stores (by its
/// CLI name, `dpmpp-2m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// DDIM.
    Ddim,
    /// DDPM.
    Ddpm,
    /// Euler.
    Euler,
    /// Euler a.
    EulerA,
    /// Heun.
    Heun,
    /// LMS.
    Lms,
    /// DPM++ 2M.
    #[serde(rename = "dpmpp-2m")]
    DpmPp2m,
    /// DPM++ 2M SDE.
    #[serde(rename = "dpmpp-2m-sde")]
    DpmPp2mSde,
    /// DPM++ 2S a.
    #[serde(rename = "dpmpp-2s-a")]
    DpmPp2sA,
    /// UniPC.
    #[serde(rename = "unipc")]
    UniPc,
    /// LCM.
    Lcm,
}

impl SamplerKind {
    /// Every sampler, in menu order.
    pub const ALL: [SamplerKind; 11] = [
        SamplerKind::Ddim,
        SamplerKind::Ddpm,
        SamplerKind::Euler,
        SamplerKind::EulerA,
        SamplerKind::Heun,
        SamplerKind::Lms,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mSde,
        SamplerKind::DpmPp2sA,
        SamplerKind::UniPc,
        SamplerKind::Lcm,
    ];

    /// The CLI name (`dpmpp-2m`).
    pub fn name(self) -> &'static str {
        Sampler::NAMES[SamplerKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(0)]
    }

    /// Whether it keeps its own timestep rules (DDIM, DDPM, LCM: no Karras or exponential
    /// schedule).
    pub fn fixed_schedule(self) -> bool {
        matches!(
            self,
            SamplerKind::Ddim | SamplerKind::Ddpm | SamplerKind::Lcm
        )
    }

    /// The sampler with `schedule` and (DDIM's) `eta`; see [`Sampler::from_name`].
    pub fn with(self, schedule: Schedule, eta: f64) -> Result<Sampler> {
        Sampler::from_name(self.name(), schedule, eta)
    }

    /// AUTOMATIC1111's name (`DPM++ 2M`).
    pub fn a1111_name(self) -> &'static str {
        self.with(Schedule::Default, 0.0)
            .map(|s| s.a1111_name())
            .unwrap_or("?")
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Sampler::NAMES
            .iter()
            .position(|n| *n == s.trim())
            .map(|i| SamplerKind::ALL[i])
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "unknown sampler '{s}' (available: {})",
                    Sampler::NAMES.join(", ")
                ))
            })
    }
}

impl Sampler {
    /// Which sampler this is, without its options.
    pub fn kind(&self) -> SamplerKind {
        self.name().parse().unwrap_or(SamplerKind::Ddim)
    }

    /// Every sampler's CLI name, in menu order.
    pub const NAMES: [&'static str; 11] = [
        "ddim",
        "ddpm",
        "euler",
        "euler-a",
        "heun",
        "lms",
        "dpmpp-2m",
        "dpmpp-2m-sde",
        "dpmpp-2s-a",
        "unipc",
        "lcm",
    ];

    /// The sampler called `name` (one of [`Sampler::NAMES`]) with `schedule`; `eta` is DDIM's η.
    /// DDIM, DDPM and LCM have their own timestep rules and refuse a non-default schedule.
    pub fn from_name(name: &str, schedule: Schedule, eta: f64) -> Result<Self> {
        let fixed = |s: Sampler| {
            if schedule == Schedule::Default {
                Ok(s)
            } else {
                Err(Error::InvalidRequest(format!(
                    "{name} uses its own timestep spacing; Karras and exponential schedules need one of euler, euler-a, heun, lms, dpmpp-2m, dpmpp-2m-sde, dpmpp-2s-a, unipc"
                )))
            }
        };
        match name {
            "ddim" => fixed(Sampler::Ddim { eta }),
            "ddpm" => fixed(Sampler::Ddpm),
            "lcm" => fixed(Sampler::Lcm),
            "euler" => Ok(Sampler::Euler { schedule }),
            "euler-a" => Ok(Sampler::EulerAncestral { schedule }),
            "heun" => Ok(Sampler::Heun { schedule }),
            "lms" => Ok(Sampler::Lms { schedule }),
            "dpmpp-2m" => Ok(Sampler::DpmPp2m { schedule }),
            "dpmpp-2m-sde" => Ok(Sampler::DpmPp2mSde { schedule }),
            "dpmpp-2s-a" => Ok(Sampler::DpmPp2sAncestral { schedule }),
            "unipc" => Ok(Sampler::UniPc { schedule }),
            other => Err(Error::InvalidRequest(format!(
                "unknown sampler '{other}' (available: {})",
                Sampler::NAMES.join(", ")
            ))),
        }
    }

    /// The CLI name (inverse of [`Sampler::from_name`]).
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::Ddim { .. } => "ddim",
            Sampler::Ddpm => "ddpm",
            Sampler::Euler { .. } => "euler",
            Sampler::EulerAncestral { .. } => "euler-a",
            Sampler::Heun { .. } => "heun",
            Sampler::Lms { .. } => "lms",
            Sampler::DpmPp2m { .. } => "dpmpp-2m",
            Sampler::DpmPp2mSde { .. } => "dpmpp-2m-sde",
            Sampler::DpmPp2sAncestral { .. } => "dpmpp-2s-a",
            Sampler::UniPc { .. } => "unipc",
            Sampler::Lcm => "lcm",
        }
    }

    /// AUTOMATIC1111's name for this sampler (for PNG `parameters`).
    pub fn a1111_name(&self) -> &'static str {
        match self {
            Sampler::Ddim { .. } => "DDIM",
            Sampler::Ddpm => "DDPM",
            Sampler::Euler { .. } => "Euler",
            Sampler::EulerAncestral { .. } => "Euler a",
            Sampler::Heun { .. } => "Heun",
            Sampler::Lms { .. } => "LMS",
            Sampler::DpmPp2m { .. } => "DPM++ 2M",
            Sampler::DpmPp2mSde { .. } => "DPM++ 2M SDE",
            Sampler::DpmPp2sAncestral { .. } => "DPM++ 2S a",
            Sampler::UniPc { .. } => "UniPC",
            Sampler::Lcm => "LCM",
        }
    }

    /// The sampler A1111 calls `label` (as in `Sampler: …` of PNG `parameters`), with
    /// `schedule`; older A1111 labels ending in " Karras" imply the Karras schedule.
    pub fn from_a1111(label: &str, schedule: Schedule) -> Option<Self> {
        let (label, schedule) = match label.strip_suffix(" Karras") {
            Some(base) => (base, Schedule::Karras),
            None => (label, schedule),
        };
        let name = Sampler::NAMES.iter().find(|n| {
            Sampler::from_name(n, Schedule::Default, 0.0).is_ok_and(|s| s.a1111_name() == label)
        })?;
        Sampler::from_name(name, schedule, 0.0).ok()
    }

    /// The schedule (A1111's "Schedule type").
    pub fn schedule(&self) -> Schedule {
        match self {
            Sampler::Ddim { .. } | Sampler::Ddpm | Sampler::Lcm => Schedule::Default,
            Sampler::Euler { schedule }
            | Sampler::EulerAncestral { schedule }
            | Sampler::Heun { schedule }
            | Sampler::Lms { schedule }
            | Sampler::DpmPp2m { schedule }
            | Sampler::DpmPp2mSde { schedule }
            | Sampler::DpmPp2sAncestral { schedule }
            | Sampler::UniPc { schedule } => *schedule,
        }
    }

    /// Whether the sampler draws fresh noise while sampling (then the seed matters beyond the
    /// initial latents).
    pub fn is_stochastic(&self) -> bool {
        match self {
            Sampler::Ddim { eta } => *eta > 0.0,
            Sampler::Ddpm
            | Sampler::EulerAncestral { .. }
            | Sampler::DpmPp2mSde { .. }
            | Sampler::DpmPp2sAncestral { .. }
            | Sampler::Lcm => true,
            _ => false,
        }
    }

    /// The scheduler for `steps` steps under the model's `config`.
    pub fn scheduler(&self, config: &SchedulerConfig, steps: usize) -> Result<Box<dyn Scheduler>> {
        Ok(match *self {
            Sampler::Ddim { eta } => Box::new(DdimScheduler::new(config, steps, eta)?),
            Sampler::Ddpm => Box::new(DdpmScheduler::new(config, steps)?),
            Sampler::Euler { schedule } => Box::new(EulerScheduler::new(config, steps, schedule)?),
            Sampler::EulerAncestral { schedule } => {
                Box::new(EulerAncestralScheduler::new(config, steps, schedule)?)
            }
            Sampler::Heun { schedule } => Box::new(HeunScheduler::new(config, steps, schedule)?),
            Sampler::Lms { schedule } => Box::new(LmsScheduler::new(config, steps, schedule)?),
            Sampler::DpmPp2m { schedule } => Box::new(DpmSolverMultistepScheduler::new(
                config,
                steps,
                schedule,
                DpmAlgorithm::DpmSolverPp,
            )?),
            Sampler::DpmPp2mSde { schedule } => Box::new(DpmSolverMultistepScheduler::new(
                config,
                steps,
                schedule,
                DpmAlgorithm::SdeDpmSolverPp,
            )?),
            Sampler::DpmPp2sAncestral { schedule } => {
                Box::new(DpmPp2sAncestralScheduler::new(config, steps, schedule)?)
            }
            Sampler::UniPc { schedule } => {
                Box::new(UniPcMultistepScheduler::new(config, steps, schedule)?)
            }
            Sampler::Lcm => Box::new(LcmScheduler::new(config, steps)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Sampler::NAMES {
            let s = Sampler::from_name(name, Schedule::Default, 0.0).expect("known name");
            assert_eq!(s.name(), name);
            assert_eq!(
                Sampler::from_a1111(s.a1111_name(), Schedule::Default),
                Some(s)
            );
            let json = serde_json::to_string(&s).expect("serialise");
            assert_eq!(
                serde_json::from_str::<Sampler>(&json).expect("deserialise"),
                s,
                "{json}"
            );
        }
        assert_eq!(
            Sampler::from_a1111("DPM++ 2M Karras", Schedule::Default),
            Some(Sampler::DpmPp2m {
                schedule: Schedule::Karras
            })
        );
        assert!(Sampler::from_name("ddim", Schedule::Karras, 0.0).is_err());
        for kind in SamplerKind::ALL {
            let s = kind.with(Schedule::Default, 0.0).expect("default schedule");
            assert_eq!(
                (s.kind(), kind.name().parse::<SamplerKind>().ok()),
                (kind, Some(kind))
            );
            let json = serde_json::to_string(&kind).expect("serialise");
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        assert!("plms".parse::<SamplerKind>().is_err());
        assert!(Sampler::from_name("plms", Schedule::Default, 0.0).is_err());
    }
}
