//! Training-loop control, written once for every trainer (LoRA, textual inversion, whole
//! models): waiting while paused, stopping when cancelled, turning a NaN or infinite value
//! into [`Error::TrainingDiverged`] that names the last good checkpoint, the smoothed loss, the
//! rate and time left, and when checkpoints and samples are due.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::job::{CancelToken, PauseToken};
use crate::training::dataset::{DatasetReport, Plan};

/// What a run reports as it goes (the monitor's data).
#[derive(Debug, Clone)]
pub enum TrainingEvent {
    /// Validated data and the plan, before the first step.
    Started {
        /// The dataset report.
        report: Box<DatasetReport>,
        /// The plan.
        plan: Plan,
        /// The step it starts from (0, or the checkpoint's).
        from_step: usize,
        /// The device it trains on (never `auto`).
        device: DeviceSpec,
        /// The frozen model's precision (f32 for base training, which trains every weight).
        precision: crate::job::Precision,
    },
    /// An optimiser step finished.
    Step {
        /// Steps done (1-based).
        step: usize,
        /// Steps in all.
        total: usize,
        /// Epoch (1-based).
        epoch: usize,
        /// This step's loss.
        loss: f64,
        /// Exponential moving average of the loss (0.9).
        smoothed_loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Global gradient norm before clipping.
        grad_norm: f64,
        /// Steps per second (this session).
        it_per_s: f64,
        /// Seconds left at that rate.
        eta_s: f64,
    },
    /// Sample images at fixed prompts and seeds with the current adapter.
    Samples {
        /// The step they show.
        step: usize,
        /// One per sample prompt.
        images: Vec<RgbImage>,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Its step.
        step: usize,
        /// The file.
        path: PathBuf,
    },
}

/// Weight of the newest loss in the smoothed loss (an exponential moving average).
pub const SMOOTHING: f64 = 0.1;

/// How long a paused run sleeps between looks at its tokens.
const PAUSE_POLL: Duration = Duration::from_millis(50);

/// The state every step of a run shares.
pub struct RunControl<'a> {
    cancel: &'a CancelToken,
    pause: &'a PauseToken,
    on_event: &'a mut dyn FnMut(TrainingEvent),
    started: Instant,
    /// Time spent paused since `started` (not counted in the rate).
    paused: Cell<Duration>,
    first_step: usize,
    total: usize,
    smoothed: f64,
    last_checkpoint: Option<PathBuf>,
}

impl<'a> RunControl<'a> {
    /// A run of `total` steps starting after step `from_step` (0, or a checkpoint's), with the
    /// smoothed loss it had then (NaN: none yet) and the checkpoint it resumed from.
    pub fn new(
        cancel: &'a CancelToken,
        pause: &'a PauseToken,
        on_event: &'a mut dyn FnMut(TrainingEvent),
        from_step: usize,
        total: usize,
        smoothed: f64,
        resumed_from: Option<PathBuf>,
    ) -> Self {
        RunControl {
            cancel,
            pause,
            on_event,
            started: Instant::now(),
            paused: Cell::new(Duration::ZERO),
            first_step: from_step,
            total,
            smoothed,
            last_checkpoint: resumed_from,
        }
    }

    /// Returns when not paused; [`Error::Cancelled`] when cancelled (also while paused).
    /// Time spent here paused does not count in the rate or the time left.
    pub fn wait(&self) -> Result<()> {
        let since = Instant::now();
        let result = loop {
            if self.cancel.is_cancelled() {
                break Err(Error::Cancelled);
            }
            if !self.pause.is_paused() {
                break Ok(());
            }
            std::thread::sleep(PAUSE_POLL);
        };
        self.paused.set(self.paused.get() + since.elapsed());
        result
    }

    /// `e` as it ends the run at 0-based step `step`: a NaN or infinite value becomes
    /// [`Error::TrainingDiverged`] at that (1-based) step, naming the last checkpoint.
    pub fn diverged(&self, e: Error, step: usize) -> Error {
        match e {
            Error::NonFinite(what) => Error::TrainingDiverged {
                step: step + 1,
                what,
                last_checkpoint: self.last_checkpoint.clone(),
            },
            e => e,
        }
    }

    /// The smoothed loss so far (NaN before the first step).
    pub fn smoothed_loss(&self) -> f64 {
        self.smoothed
    }

    /// Records that (1-based) `step` of `epoch` finished with `loss` at learning rate `lr`
    /// and gradient norm `grad_norm`, and reports it with the smoothed loss, the rate since
    /// this session started (time paused left out) and the time left at that rate.
    pub fn step_done(&mut self, step: usize, epoch: usize, loss: f64, lr: f64, grad_norm: f64) {
        self.smoothed = if self.smoothed.is_nan() {
            loss
        } else {
            (1.0 - SMOOTHING) * self.smoothed + SMOOTHING * loss
        };
        let running = self.started.elapsed().saturating_sub(self.paused.get());
        let rate = (step - self.first_step) as f64 / running.as_secs_f64().max(1e-9);
        (self.on_event)(TrainingEvent::Step {
            step,
            total: self.total,
            epoch,
            loss,
            smoothed_loss: self.smoothed,
            lr,
            grad_norm,
            it_per_s: rate,
            eta_s: (self.total - step) as f64 / rate.max(1e-9),
        });
    }

    /// Whether a checkpoint is due after `step`: every `every` steps (0: never), at the last
    /// step, or when `force`d (a phase's end).
    pub fn checkpoint_due(&self, step: usize, every: usize, force: bool) -> bool {
        force || step == self.total || (every > 0 && step.is_multiple_of(every))
    }

    /// Whether sample images are due after `step` (every `every` steps and at the end; 0:
    /// never).
    pub fn samples_due(&self, step: usize, every: usize) -> bool {
        every > 0 && (step.is_multiple_of(every) || step == self.total)
    }

    /// Records and reports the checkpoint of `step` at `path`.
    pub fn checkpoint_written(&mut self, step: usize, path: PathBuf) {
        self.last_checkpoint = Some(path.clone());
        (self.on_event)(TrainingEvent::Checkpoint { step, path });
    }

    /// Reports any other event (the plan, sample images).
    pub fn report(&mut self, event: TrainingEvent) {
        (self.on_event)(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_paused_does_not_count_in_the_rate() {
        let (cancel, pause) = (CancelToken::new(), PauseToken::default());
        let mut events = Vec::new();
        let mut on_event = |e: TrainingEvent| events.push(e);
        let mut run = RunControl::new(&cancel, &pause, &mut on_event, 0, 10, f64::NAN, None);
        pause.set(true);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(600));
                pause.set(false);
            });
            assert!(run.wait().is_ok());
        });
        run.step_done(1, 1, 1.0, 1e-4, 0.5);
        drop(run);
        let Some(TrainingEvent::Step {
            it_per_s, eta_s, ..
        }) = events.last()
        else {
            panic!("{events:?}")
        };
        // One step in (almost) no running time; counting the 0.6 s pause would give < 2 it/s.
        assert!(
            *it_per_s > 5.0 && *eta_s < 2.0,
            "{it_per_s} it/s, {eta_s} s left"
        );
    }

    #[test]
    fn steps_smooth_the_loss_divergence_names_the_checkpoint_and_cadences_hold() {
        let (cancel, pause) = (CancelToken::new(), PauseToken::default());
        let mut events = Vec::new();
        let mut on_event = |e: TrainingEvent| events.push(e);
        let mut run = RunControl::new(&cancel, &pause, &mut on_event, 0, 10, f64::NAN, None);
        assert!(run.wait().is_ok());
        run.step_done(1, 1, 2.0, 1e-4, 0.5);
        run.step_done(2, 1, 1.0, 1e-4, 0.5);
        assert!((run.smoothed_loss() - 1.9).abs() < 1e-12);
        // Divergence before any checkpoint, then after one.
        let e = run.diverged(Error::NonFinite("the loss".into()), 2);
        assert!(matches!(
            e,
            Error::TrainingDiverged {
                step: 3,
                last_checkpoint: None,
                ..
            }
        ));
        run.checkpoint_written(2, PathBuf::from("/cp/step2"));
        let e = run
            .diverged(Error::NonFinite("the gradients".into()), 3)
            .to_string();
        assert!(
            e.contains("at step 4: the gradients became NaN") && e.contains("/cp/step2"),
            "{e}"
        );
        assert!(matches!(
            run.diverged(Error::Cancelled, 3),
            Error::Cancelled
        ));
        // Cadences.
        assert!(run.checkpoint_due(4, 2, false) && !run.checkpoint_due(3, 2, false));
        assert!(run.checkpoint_due(10, 0, false) && run.checkpoint_due(3, 0, true));
        assert!(!run.checkpoint_due(3, 0, false));
        assert!(run.samples_due(10, 3) && run.samples_due(6, 3) && !run.samples_due(5, 3));
        assert!(!run.samples_due(10, 0));
        // Cancelling wins over pausing.
        pause.set(true);
        cancel.cancel();
        assert!(matches!(run.wait(), Err(Error::Cancelled)));
        drop(run);
        let steps: Vec<(usize, f64)> = events
            .iter()
            .filter_map(|e| match e {
                TrainingEvent::Step {
                    step,
                    smoothed_loss,
                    total,
                    ..
                } => {
                    assert_eq!(*total, 10);
                    Some((*step, *smoothed_loss))
                }
                _ => None,
            })
            .collect();
        assert_eq!(steps, vec![(1, 2.0), (2, 0.9 * 2.0 + 0.1 * 1.0)]);
        assert!(matches!(
            events.last(),
            Some(TrainingEvent::Checkpoint { step: 2, .. })
        ));
    }
}
