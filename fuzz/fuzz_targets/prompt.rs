//! The A1111 prompt parser (attention weights, `BREAK`, `<lora:…>` tags) and the chunker that
//! splits a prompt into 75-token windows with the bundled tokenizer.
#![no_main]

use kiln_engine::prompt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = kiln_fuzz::text(data) else {
        return;
    };
    let _ = prompt::parse_attention(text);
    let (rest, _tags) = prompt::lora_tags(text);
    let tokenizer = kiln_fuzz::tokenizer();
    let _ = prompt::chunks(tokenizer, &rest);
    let _ = prompt::token_count(tokenizer, text);
});
