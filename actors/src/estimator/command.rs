//! `ecomap train-estimator`: train on a profile dataset, or evaluate a
//! trained estimator against the baselines.

use super::train::{evaluate, examples, train, write_eval, EvalRow, TrainOptions};
use super::{EstimatorError, TransformerEstimator};
use ecomap::estimate::dataset::{read_profile, DatasetError};
use ecomap::estimate::descriptors::{DescriptorError, Descriptors};
use ecomap::estimate::EstimateError;
use std::path::{Path, PathBuf};

/// What the command was asked to do.
#[derive(Debug, Clone)]
pub struct TrainEstimatorArgs {
    /// The profile dataset.
    pub data: PathBuf,
    /// Output folder (weights, or `estimator_eval.csv`).
    pub out: PathBuf,
    /// Model descriptors.
    pub descriptors: PathBuf,
    /// Whether `descriptors` was asked for (not the default): evaluating
    /// weights that carry their own table then says which one is used.
    pub descriptors_given: bool,
    /// `Some(weights)`: evaluate these instead of training.
    pub evaluate: Option<PathBuf>,
    /// Whether `options.heldout_arch` was asked for (not the default):
    /// evaluating weights trained holding out another is then an error.
    pub heldout_arch_given: bool,
    /// Training options.
    pub options: TrainOptions,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainEstimatorError {
    /// The dataset is unusable.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The descriptors are unusable.
    #[error(transparent)]
    Descriptors(#[from] DescriptorError),
    /// The weights are unusable.
    #[error(transparent)]
    Weights(#[from] EstimatorError),
    /// The dataset names something the descriptors lack, or inference failed.
    #[error(transparent)]
    Estimate(#[from] EstimateError),
    /// The training split is empty.
    #[error("{0}")]
    Split(String),
    /// An output cannot be written.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl TrainEstimatorError {
    /// 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TrainEstimatorError::Write { .. } => 1,
            TrainEstimatorError::Weights(EstimatorError::Write { .. }) => 1,
            TrainEstimatorError::Estimate(EstimateError::Backend(_)) => 1,
            _ => 2,
        }
    }
}

/// Render evaluation rows as a table.
pub fn render_eval(rows: &[EvalRow]) -> String {
    let mut s = format!(
        "{:<12} {:<12} {:<13} {:>9} {:>6}\n",
        "model", "target", "split", "MAPE %", "n"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<12} {:<12} {:<13} {:>9.2} {:>6}\n",
            r.model, r.target, r.split, r.mape_pct, r.n
        ));
    }
    s
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Run the command; returns the evaluation rows it wrote.
pub fn run(args: &TrainEstimatorArgs) -> Result<Vec<EvalRow>, TrainEstimatorError> {
    // Evaluating: the table the weights were trained with, when they carry one.
    let own = args
        .evaluate
        .as_ref()
        .map(|w| super::weight_files(w).0.with_file_name("descriptors.csv"))
        .filter(|p| p.is_file());
    if let (Some(own), true) = (&own, args.descriptors_given) {
        eprintln!(
            "ecomap: --descriptors {} is not used: the weights carry the table they were \
             trained with ({})",
            args.descriptors.display(),
            own.display()
        );
    }
    let descriptors = Descriptors::load(own.as_deref().unwrap_or(&args.descriptors))?;
    let rows = read_profile(&args.data)?;
    let write = |path: &Path, e: &dyn std::fmt::Display| TrainEstimatorError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut est = match &args.evaluate {
        Some(weights) => {
            let est = TransformerEstimator::load(weights, descriptors)?;
            let trained_without = &est.meta().heldout_arch;
            if args.heldout_arch_given && *trained_without != args.options.heldout_arch {
                return Err(TrainEstimatorError::Split(format!(
                    "--heldout-arch {}: these weights were trained holding out '{trained_without}', \
                     and evaluation scores the split they were trained on; drop --heldout-arch, \
                     or train weights that hold out '{}'",
                    args.options.heldout_arch, args.options.heldout_arch
                )));
            }
            est
        }
        None => {
            let all = examples(&descriptors, &rows, &args.options)?;
            if !all
                .iter()
                .any(|e| e.split == super::train::Split::HeldoutArch)
            {
                let mut known: Vec<&str> = rows
                    .iter()
                    .filter_map(|r| descriptors.index(&r.variant))
                    .map(|i| descriptors.get(i).architecture.as_str())
                    .collect();
                known.sort_unstable();
                known.dedup();
                return Err(TrainEstimatorError::Split(format!(
                    "--heldout-arch {}: no configuration of {} runs that architecture, so \
                     nothing would be held out; name one of {}",
                    args.options.heldout_arch,
                    args.data.display(),
                    known.join(", ")
                )));
            }
            let n_train = all
                .iter()
                .filter(|e| e.split == super::train::Split::Train)
                .count();
            if n_train == 0 {
                return Err(TrainEstimatorError::Split(format!(
                    "{}: no configuration is left to train on after holding out '{}' and {:.0}% \
                     of the tenant combinations; profile more configurations",
                    args.data.display(),
                    args.options.heldout_arch,
                    args.options.heldout_mix_fraction * 100.0
                )));
            }
            // Before the epochs, not after: an --out that cannot be made
            // should not cost a training run.
            std::fs::create_dir_all(&args.out).map_err(|e| write(&args.out, &e))?;
            let bar = indicatif::ProgressBar::new(args.options.epochs as u64);
            let (est, loss) = train(
                descriptors,
                &all,
                &args.options,
                &file_name(&args.data),
                &rows[0].device,
                |_, _| bar.inc(1),
            );
            bar.finish_and_clear();
            let meta = est.meta();
            match (meta.best_epoch, meta.validation_mape_pct) {
                (Some(kept), Some(score)) => eprintln!(
                    "ecomap: trained on {} configurations ({} of them validating), {} epochs, \
                     final loss {loss:.4}; kept the weights after epoch {kept} (validation \
                     {score:.2}%)",
                    n_train, meta.validation_configs, args.options.epochs
                ),
                _ => eprintln!(
                    "ecomap: trained on {n_train} configurations, {} epochs, final loss {loss:.4}",
                    args.options.epochs
                ),
            }
            est.save(&args.out)?;
            // The weights are only meaningful with the table their model
            // indices refer to: keep a copy beside them.
            // Not onto itself (the same file by any path or link): copying
            // a file onto itself truncates it.
            let copy = args.out.join("descriptors.csv");
            let same = {
                use std::os::unix::fs::MetadataExt;
                match (
                    std::fs::metadata(&args.descriptors),
                    std::fs::metadata(&copy),
                ) {
                    (Ok(from), Ok(to)) => (from.dev(), from.ino()) == (to.dev(), to.ino()),
                    _ => false,
                }
            };
            if !same {
                std::fs::copy(&args.descriptors, &copy).map_err(|e| write(&copy, &e))?;
            }
            eprintln!(
                "ecomap: wrote {}",
                super::weight_files(&args.out).0.display()
            );
            est
        }
    };
    // Evaluate on the split the weights were trained with.
    let meta = est.meta().clone();
    let options = TrainOptions {
        seed: meta.seed,
        heldout_arch: meta.heldout_arch.clone(),
        heldout_mix_fraction: meta.heldout_mix_fraction,
        ..args.options.clone()
    };
    let all = examples(est.descriptors(), &rows, &options)?;
    // The baselines (lookup, linear) are fitted on the training split: a
    // dataset with none (only the held-out architecture, or only held-out
    // mixes) cannot score them.
    if !all.iter().any(|e| e.split == super::train::Split::Train) {
        return Err(TrainEstimatorError::Split(format!(
            "{}: no configuration falls in the training split of these weights (held out: '{}' \
             and {:.0}% of the tenant combinations), so the lookup and linear baselines cannot \
             be fitted; evaluate on a dataset with training configurations",
            args.data.display(),
            options.heldout_arch,
            options.heldout_mix_fraction * 100.0
        )));
    }
    let eval = evaluate(&mut est, &all)?;
    // Made only now: a bad input above leaves no empty folder behind.
    std::fs::create_dir_all(&args.out).map_err(|e| write(&args.out, &e))?;
    let path = args.out.join("estimator_eval.csv");
    write_eval(&path, &eval).map_err(|e| write(&path, &e))?;
    eprintln!("ecomap: wrote {}", path.display());
    Ok(eval)
}
