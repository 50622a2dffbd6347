//! Writes the random-weight models used by the sd-cpp tests.
//!
//! `tiny-sd-model DIR [SEED]` writes the tiny Z-Image image model (31 MB);
//! `tiny-sd-model --wan DIR [SEED]` writes the Wan-shaped video model
//! (2.8 GB). Each prints one `role path` line per file.

use studio_worker_tests::tiny_sd;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let wan = args.first().is_some_and(|a| a == "--wan");
    if wan {
        args.remove(0);
    }
    let Some(dir) = args.first().cloned() else {
        eprintln!("usage: tiny-sd-model [--wan] DIR [SEED]");
        std::process::exit(2);
    };
    let seed = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let dir = std::path::Path::new(&dir);
    let files = if wan {
        tiny_sd::write_wan(dir, seed)
            .map(|m| vec![("diffusion-model", m.diffusion), ("taesd", m.taesd)])
    } else {
        tiny_sd::write(dir, seed).map(|m| {
            vec![
                ("diffusion-model", m.diffusion),
                ("text-encoder", m.text_encoder),
                ("taesd", m.taesd),
            ]
        })
    };
    match files {
        Ok(files) => {
            for (role, path) in files {
                println!("{role} {}", path.display());
            }
        }
        Err(e) => {
            eprintln!("tiny-sd-model: cannot write {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}
