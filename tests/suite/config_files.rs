//! Every shipped config parses; the config hash ignores placement; schema errors name the key.

use crate::harness::repo;
use lockstep_core::{load_config, parse_config};
use std::path::Path;

#[test]
fn every_shipped_config_parses() {
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("configs")).expect("configs/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            let c = load_config(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(c.hash().len(), 64);
            n += 1;
        }
    }
    assert!(n >= 3, "expected the three shipped configs, found {n}");
}

/// `lockstep configs` lists every file in configs/ and prints each byte for byte (the binary
/// carries them, so `scripts/gpu-check.sh` needs no checkout); an unknown name is an error that
/// lists the real ones.
#[test]
fn the_binary_carries_every_shipped_config() {
    let listed = String::from_utf8(crate::harness::lockstep(&["configs"], true).stdout).unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(repo().join("configs"))
        .expect("configs/")
        .filter_map(|e| {
            let p = e.expect("entry").path();
            (p.extension()? == "toml").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = listed.lines().map(String::from).collect();
    names.sort();
    assert_eq!(names, on_disk);
    for n in &names {
        let printed = crate::harness::lockstep(&["configs", n], true).stdout;
        let file = std::fs::read(repo().join("configs").join(format!("{n}.toml"))).unwrap();
        assert_eq!(printed, file, "lockstep configs {n}");
    }
    let o = crate::harness::lockstep(&["configs", "nope"], false);
    assert!(crate::harness::stderr(&o).contains("digits_mlp"));
}

#[test]
fn placement_does_not_change_the_config_hash() {
    let text = std::fs::read_to_string(repo().join("configs/digits_mlp.toml")).expect("read");
    let a = parse_config(&text, Path::new("a.toml")).expect("parse");
    let b = parse_config(
        &text
            .replace("backend = \"ndarray\"", "backend = \"wgpu\"")
            .replace("threads = 0", "threads = 2"),
        Path::new("b.toml"),
    )
    .expect("parse");
    let c =
        parse_config(&text.replace("seed = 42", "seed = 43"), Path::new("c.toml")).expect("parse");
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
}

fn parse_err(text: &str) -> String {
    match parse_config(text, Path::new("job.toml")) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const MINIMAL: &str = "seed = 1\n[data]\ndataset = \"digits\"\n[model]\nkind = \"mlp\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nbatch_size = 8\n";

#[test]
fn minimal_config_fills_defaults() {
    let c = parse_config(MINIMAL, Path::new("job.toml")).expect("valid");
    assert_eq!(c.name, "job");
    assert_eq!(c.train.epochs, 1);
    assert_eq!(c.optimizer.momentum, 0.9);
}

#[test]
fn schema_errors_name_file_key_and_fix() {
    let e = parse_err(&MINIMAL.replace("[train]\n", "[train]\nbatch_sise = 3\n"));
    assert!(
        e.contains("job.toml") && e.contains("batch_sise") && e.contains("fix"),
        "{e}"
    );
    let e = parse_err(&MINIMAL.replace("batch_size = 8", "batch_size = \"eight\""));
    assert!(e.contains("job.toml") && e.contains("batch_size"), "{e}");
    let e = parse_err(&MINIMAL.replace("lr = 0.1", "lr = -1.0"));
    assert!(
        e.contains("optimizer.lr") && e.contains("-1") && e.contains("fix"),
        "{e}"
    );
    let e = parse_err(&MINIMAL.replace("kind = \"mlp\"", "kind = \"transformer\""));
    assert!(e.contains("model.kind") && e.contains("transformer"), "{e}");
    let e = parse_err(&MINIMAL.replace("seed = 1\n", ""));
    assert!(e.contains("seed"), "{e}");
    let e = parse_err(&MINIMAL.replace("kind = \"sgd\"", "kind = \"sgd\"\nbetas = [0.9, 0.99]"));
    assert!(e.contains("optimizer.betas"), "{e}");
    let e = parse_err(&MINIMAL.replace("kind = \"mlp\"", "kind = \"mlp\"\npool = \"avg\""));
    assert!(e.contains("model.pool") && e.contains("cnn"), "{e}");
}
