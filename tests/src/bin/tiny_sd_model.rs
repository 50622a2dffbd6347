//! Writes the tiny random-weight Z-Image model used by the sd-cpp tests.
//!
//! `tiny-sd-model DIR [SEED]` prints one `role path` line per file.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: tiny-sd-model DIR [SEED]");
        std::process::exit(2);
    };
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    match studio_worker_tests::tiny_sd::write(std::path::Path::new(&dir), seed) {
        Ok(m) => {
            println!("diffusion-model {}", m.diffusion.display());
            println!("text-encoder {}", m.text_encoder.display());
            println!("taesd {}", m.taesd.display());
        }
        Err(e) => {
            eprintln!("tiny-sd-model: cannot write {dir}: {e}");
            std::process::exit(1);
        }
    }
}
