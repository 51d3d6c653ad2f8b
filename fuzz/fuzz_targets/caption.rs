//! Dataset captions: a `.txt` beside a training image, read and checked by the dataset
//! validation the Train tab and `kiln train` run, and the trigger-word guess over captions.
#![no_main]

use kiln_engine::training::dataset::{self, DatasetOptions};
use libfuzzer_sys::fuzz_target;

/// A real 16×16 PNG for the caption to describe.
const IMAGE: &[u8] = include_bytes!("../../tests/fixtures/ref/tiny-a.init.png");

fuzz_target!(|data: &[u8]| {
    let dir = kiln_fuzz::scratch_dir().join("dataset");
    if !dir.is_dir() {
        std::fs::create_dir(&dir).expect("dataset folder");
        std::fs::write(dir.join("a.png"), IMAGE).expect("image");
    }
    std::fs::write(dir.join("a.txt"), data).expect("caption");
    let files = dataset::image_files(&dir).expect("the dataset folder lists");
    let _ = dataset::validate(&files, &DatasetOptions::default(), kiln_fuzz::tokenizer());
    if let Some(text) = kiln_fuzz::text(data) {
        let captions: Vec<&str> = text.lines().collect();
        let _ = dataset::common_token(&captions);
    }
});
