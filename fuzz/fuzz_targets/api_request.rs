//! `kiln serve` request bodies: `txt2img` and `img2img` (with base64 init images) read
//! against the default limits, and the `options` fields.
#![no_main]

use kiln_serve::a1111::parse_request;
use kiln_serve::body::Fields;
use kiln_serve::config::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (endpoint, body) = kiln_fuzz::select(data, 3);
    let limits = Limits::default();
    match endpoint {
        0 | 1 => {
            let _ = parse_request(body, endpoint == 1, &limits);
        }
        _ => {
            if let Ok(mut f) = Fields::parse(body) {
                let _ = f.string("sd_model_checkpoint");
                let _ = f.int_in("CLIP_stop_at_last_layers", 1, 12);
                let _ = f.bool("samples_save");
                let _ = f.float("denoising_strength");
                let _ = f.strings("styles");
                let _ = f.unknown();
                let _ = f.finish();
            }
        }
    }
});
