//! How `kiln train lora|ti|base` report a run: human lines on stderr (the data report, the
//! plan, one line per step, checkpoints), or with `--json` one JSON object per line on stdout
//! — the contract scripts read:
//!
//! ```text
//! {"event":"started","report":{…},"plan":{…},"plan_text":"10 images × …","from_step":0,
//!  "device":"cpu"}
//! {"event":"phase","phase":"vae","steps":30}            (kiln train base)
//! {"event":"step","step":1,"total":40,"epoch":1,"loss":0.51,"smoothed_loss":0.51,"lr":1e-4,
//!  "grad_norm":0.3,"it_per_s":2.5,"eta_s":15.6}
//! {"event":"checkpoint","step":10,"path":"…"}
//! {"event":"samples","step":10,"count":2,"files":["…/step000010-0.png", …]}
//! {"event":"finished","output":"…"}
//! ```

use std::path::{Path, PathBuf};

use kiln_engine::training::run::TrainingEvent;
use serde_json::{Value, json};

/// Where a run's events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Human lines on stderr.
    Text,
    /// JSON lines on stdout.
    Json,
}

impl Report {
    /// `--json` or not.
    pub fn from_flag(json: bool) -> Self {
        if json { Report::Json } else { Report::Text }
    }

    fn emit(self, value: Value, text: impl FnOnce() -> String) {
        match self {
            Report::Json => out(&value.to_string()),
            Report::Text => eprintln!("{}", text()),
        }
    }

    /// Reports `e`; `sample_files` are where a base run saved the sample images of a
    /// [`TrainingEvent::Samples`].
    pub fn event(self, e: &TrainingEvent, sample_files: &[PathBuf]) {
        match e {
            TrainingEvent::Started {
                report,
                plan,
                from_step,
                device,
                precision,
            } => {
                if self == Report::Text {
                    eprintln!("data: {}", report.summary());
                    for entry in &report.entries {
                        for issue in &entry.issues {
                            eprintln!("  {}: {issue:?}", entry.path.display());
                        }
                    }
                }
                self.emit(
                    json!({"event": "started", "report": report, "plan": plan,
                           "plan_text": plan.describe(), "from_step": from_step,
                           "device": device, "precision": precision}),
                    || {
                        format!(
                            "plan: {} on {device} ({}){}",
                            plan.describe(),
                            precision.name(),
                            if *from_step > 0 {
                                format!(" (resuming at step {from_step})")
                            } else {
                                String::new()
                            }
                        )
                    },
                );
            }
            TrainingEvent::Step {
                step,
                total,
                epoch,
                loss,
                smoothed_loss,
                lr,
                grad_norm,
                it_per_s,
                eta_s,
            } => self.emit(
                json!({"event": "step", "step": step, "total": total, "epoch": epoch,
                       "loss": loss, "smoothed_loss": smoothed_loss, "lr": lr,
                       "grad_norm": grad_norm, "it_per_s": it_per_s, "eta_s": eta_s}),
                || {
                    format!(
                        "step {step}/{total} epoch {epoch} loss {loss:.5} (smoothed {smoothed_loss:.5}) lr {lr:.3e} grad-norm {grad_norm:.4} {it_per_s:.2} it/s ETA {eta_s:.0}s"
                    )
                },
            ),
            TrainingEvent::Checkpoint { step, path } => self.emit(
                json!({"event": "checkpoint", "step": step, "path": path}),
                || format!("checkpoint: {}", path.display()),
            ),
            TrainingEvent::Samples { step, images } => self.emit(
                json!({"event": "samples", "step": step, "count": images.len(),
                       "files": sample_files}),
                || format!("samples at step {step}: {}", images.len()),
            ),
        }
    }

    /// A phase of a base run begins (`vae` or `diffusion`), described for people as `what`.
    pub fn phase(self, phase: &str, what: &str, steps: usize) {
        self.emit(
            json!({"event": "phase", "phase": phase, "steps": steps}),
            || format!("phase {}: {what}", if phase == "vae" { 1 } else { 2 }),
        );
    }

    /// The run ended with `output`.
    pub fn finished(self, output: &Path) {
        match self {
            Report::Json => out(&json!({"event": "finished", "output": output}).to_string()),
            Report::Text => out(&output.display().to_string()),
        }
    }
}

/// A line on stdout. A reader that went away (`kiln train … --json | head`) does not stop
/// the run: its outputs are files, and the line is dropped.
fn out(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
