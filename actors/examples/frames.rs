//! Feed the images of a folder, as camera frames, through two tenants with
//! the embeddable API, and print what each model answers.
//!
//! ```sh
//! cargo run --release -p ecomap-actors --example frames -- path/to/images
//! ```
//!
//! Each frame is decoded, resized to 224×224, normalised with ImageNet's
//! mean and deviation, and submitted to both tenants at once
//! (`TenantQueue::submit_input` returns a ticket immediately); the two
//! answers are then awaited. The weights are random (nothing is
//! downloaded), so the classes are not meaningful — the latencies and the
//! path from caller to model and back are.

use ecomap::config::parse_ron;
use ecomap::config::policy::Policy;
use ecomap::config::rt::RtConfig;
use ecomap::config::workload::Workload;
use ecomap::tensor::TensorData;
use ecomap_actors::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const WORKLOAD: &str = r#"(tenants: [
    (name: "classifier", model: Vision(MobileNetV2), arrival: Periodic(rate_hz: 1.0),
     deadline: "500ms", capacity: 4),
    (name: "scene", model: Vision(ResNet18), arrival: Periodic(rate_hz: 1.0),
     deadline: "500ms", capacity: 4),
])"#;

const RT: &str = r#"(workers: [(name: "w0"), (name: "w1")])"#;

/// ImageNet's per-channel mean and standard deviation.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A decoded image as the models take it: FP32, 1×3×224×224, normalised.
fn frame(path: &Path) -> Result<TensorData, String> {
    let img = image::open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .resize_exact(224, 224, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut planes = vec![0f32; 3 * 224 * 224];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = f32::from(px[c]) / 255.0;
            planes[c * 224 * 224 + (y as usize) * 224 + x as usize] = (v - MEAN[c]) / STD[c];
        }
    }
    TensorData::from_f32(vec![1, 3, 224, 224], &planes).map_err(|e| e.to_string())
}

/// The `k` largest scores and their class indices.
fn top(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: frames DIR   (a folder of .png / .jpg images)");
        return ExitCode::from(2);
    };
    let mut images: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str())
                })
            })
            .collect(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    images.sort();
    if images.is_empty() {
        eprintln!("error: no .png or .jpg images in {}", dir.display());
        return ExitCode::from(2);
    }
    let workload: Workload =
        parse_ron(WORKLOAD, Path::new("frames.rs"), "workload").expect("the example's workload");
    let rt: RtConfig =
        parse_ron(RT, Path::new("frames.rs"), "rt-config").expect("the example's rt");
    let runtime = match Runtime::start(&workload, &rt, &Policy::edf("edf")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let tenants = [runtime.queue(0).clone(), runtime.queue(1).clone()];
    for path in &images {
        let input = match frame(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping {e}");
                continue;
            }
        };
        // Both tenants at once: the tickets come back immediately, and the
        // input's bytes are shared by both requests, not copied.
        let tickets: Vec<_> = tenants
            .iter()
            .map(|q| q.submit_input(input.clone(), None))
            .collect();
        for (q, ticket) in tenants.iter().zip(tickets) {
            match ticket {
                Err(e) => println!("{}  {:<10}  refused: {e}", path.display(), q.name()),
                Ok(t) => {
                    let a = t.wait();
                    let ms = a.timings.map_or(String::from("—"), |t| {
                        format!("{:.1} ms", t.end_to_end.as_secs_f64() * 1e3)
                    });
                    let best = a
                        .outputs
                        .first()
                        .and_then(|o| o.to_f32())
                        .map(|s| top(&s, 3))
                        .unwrap_or_default();
                    println!(
                        "{}  {:<10}  {:<8} {ms:>9}  top-3 classes {best:?}",
                        path.display(),
                        q.name(),
                        a.outcome.name()
                    );
                }
            }
        }
    }
    drop(tenants);
    let report = runtime.shutdown();
    println!("\n{}", report.render());
    ExitCode::SUCCESS
}
