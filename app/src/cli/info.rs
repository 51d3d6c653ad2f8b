//! `kiln info IMAGE.png`: the recipe an image carries.

use std::path::Path;

use anyhow::Result;
use kiln_engine::metadata::{Source, a1111, read_image_info};

/// Prints where the image's metadata comes from and its settings (A1111 text or JSON).
pub fn info(image: &Path, json: bool) -> Result<()> {
    let info = read_image_info(image)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let source = match info.source {
        Source::Kiln => "Kiln",
        Source::Automatic1111 => "AUTOMATIC1111",
        Source::ComfyUi => "ComfyUI",
        Source::InvokeAi => "InvokeAI",
    };
    println!("source: {source}");
    println!("{}", a1111::write(&info.parameters));
    if let Some(recipe) = &info.recipe {
        println!("model path: {}", recipe.model.path);
        for l in &recipe.loras {
            println!("lora: {} ({}) weight {}", l.name, l.path, l.weight);
        }
        for e in &recipe.embeddings {
            println!("embedding: {} ({})", e.token, e.path);
        }
        if let Some(i) = &recipe.init_image {
            println!("init image: {} strength {}", i.path, i.strength);
        }
    }
    Ok(())
}
