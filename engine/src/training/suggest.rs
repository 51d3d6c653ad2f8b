//! Training settings that fit the loaded model and the dataset, with the reasoning in words
//! (what the Train tab fills in until the user sets a value, and shows under its options).
//!
//! Rules of thumb, as kohya_ss and OneTrainer guides give them for SD 1.5 (a LoRA learns a
//! subject or style in about 100 optimiser steps per image at batch 1 and learning rate 1e-4,
//! rank 8–16; an embedding in a few thousand steps at 5e-3), scaled for small models such as
//! kiln-tiny (native size ≤ 128 px): their layers are narrow (rank 4 covers them) and they
//! learn at 1e-3 in fewer steps per image. Training at the model's native size is always
//! suggested — smaller images are upscaled, larger ones waste time on detail the model never
//! saw.

/// What is being trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuggestFor {
    /// A LoRA.
    Lora,
    /// A textual-inversion embedding.
    Embedding,
}

/// Suggested settings and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// Training resolution (the model's native size).
    pub resolution: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// LoRA rank (alpha = rank).
    pub rank: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// Steps between checkpoints (and sample images).
    pub checkpoint_every: usize,
    /// The reasoning, one sentence.
    pub why: String,
}

/// Native sizes up to this are "small models" (kiln-tiny: 64).
const SMALL_MODEL: usize = 128;

/// Settings for training `what` on a model of native size `native` (pixels) with `images`
/// usable images at batch size `batch`.
pub fn suggest(what: SuggestFor, native: usize, images: usize, batch: usize) -> Suggestion {
    let images = images.max(1);
    let batch = batch.max(1);
    let small = native <= SMALL_MODEL;
    let (per_image, min, max, learning_rate, rank) = match (what, small) {
        (SuggestFor::Lora, true) => (40, 200, 1500, 1e-3, 4),
        (SuggestFor::Lora, false) => (100, 300, 3000, 1e-4, if images <= 20 { 8 } else { 16 }),
        (SuggestFor::Embedding, true) => (60, 300, 2000, 5e-3, 4),
        (SuggestFor::Embedding, false) => (150, 500, 3000, 5e-3, 4),
    };
    let steps = round_to((images * per_image / batch).clamp(min, max), 50);
    let checkpoint_every = round_to((steps / 5).max(10), 10);
    let model = if small {
        format!("a small {native}-px model")
    } else {
        format!("a {native}-px model")
    };
    let mut why = format!(
        "For {images} image{} on {model}: resolution {native} (its native size); {steps} steps \
         (about {per_image} per image{}, at batch {batch})",
        if images == 1 { "" } else { "s" },
        if steps == min {
            ", at least"
        } else if steps == max {
            ", at most"
        } else {
            ""
        },
    );
    match what {
        SuggestFor::Lora => why.push_str(&format!(
            "; rank {rank}{}; learning rate {learning_rate:e}{}.",
            if small {
                " (its layers are narrow)"
            } else if images <= 20 {
                " (enough for a subject or a style from a few images)"
            } else {
                " (more images hold more detail)"
            },
            if small {
                " (a small model needs a larger step to move)"
            } else {
                " (the usual rate for SD 1.5 at batch 1)"
            },
        )),
        SuggestFor::Embedding => why.push_str(&format!(
            "; learning rate {learning_rate:e} (an embedding trains a few vectors only)."
        )),
    }
    Suggestion {
        resolution: native,
        steps,
        rank,
        learning_rate,
        checkpoint_every,
        why,
    }
}

/// `n` rounded to the nearest multiple of `to` (at least `to`).
fn round_to(n: usize, to: usize) -> usize {
    ((n + to / 2) / to).max(1) * to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_model_gets_its_size_a_narrow_rank_and_a_larger_rate() {
        let s = suggest(SuggestFor::Lora, 64, 12, 1);
        assert_eq!((s.resolution, s.rank, s.steps), (64, 4, 500));
        assert_eq!(s.learning_rate, 1e-3);
        assert_eq!(s.checkpoint_every, 100);
        assert!(
            s.why.starts_with("For 12 images on a small 64-px model"),
            "{}",
            s.why
        );
        assert!(s.why.contains("learning rate 1e-3"), "{}", s.why);
    }

    #[test]
    fn sd15_scales_steps_with_the_dataset_within_bounds() {
        let few = suggest(SuggestFor::Lora, 512, 2, 1);
        assert_eq!((few.resolution, few.steps, few.rank), (512, 300, 8));
        assert!(few.why.contains("at least"), "{}", few.why);
        let some = suggest(SuggestFor::Lora, 512, 15, 1);
        assert_eq!((some.steps, some.rank), (1500, 8));
        assert_eq!(some.learning_rate, 1e-4);
        let many = suggest(SuggestFor::Lora, 512, 200, 2);
        assert_eq!((many.steps, many.rank), (3000, 16));
        assert!(many.why.contains("at most"), "{}", many.why);
        let ti = suggest(SuggestFor::Embedding, 512, 10, 1);
        assert_eq!((ti.steps, ti.learning_rate), (1500, 5e-3));
    }
}
