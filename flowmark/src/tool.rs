//! `flowmark scitag` and `flowmark registry`: the small tools.

use std::{path::Path, process::Command};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{
    registry::Registry,
    scitag::{SciTag, TagError},
};

/// The JSON that `flowmark scitag` prints for a valid tag.
pub fn describe(tag: SciTag, registry: &Registry) -> Value {
    let mut out = json!({
        "value": tag.value(),
        "experiment": tag.experiment,
        "experiment_name": registry.experiment_name(tag.experiment),
        "activity": tag.activity,
        "activity_name": registry.activity_name(tag.experiment, tag.activity),
    });
    match tag.flow_label() {
        Ok(label) => {
            out["flow_label"] = json!(label);
            out["flow_label_hex"] = json!(format!("0x{label:05x}"));
            out["semantic_mask"] = json!(format!("0x{:05x}", flowmark_common::SEMANTIC_MASK));
            out["entropy_mask"] = json!(format!("0x{:05x}", flowmark_common::ENTROPY_MASK));
        }
        Err(e) => {
            out["flow_label"] = Value::Null;
            out["reason"] = json!(e.to_string());
        }
    }
    if registry.experiment_name(tag.experiment).is_none() {
        out["warning"] = json!(format!(
            "experiment {} is not in the registry",
            tag.experiment
        ));
    } else if registry
        .activity_name(tag.experiment, tag.activity)
        .is_none()
    {
        out["warning"] = json!(format!(
            "activity {} is not in the registry for experiment {}",
            tag.activity, tag.experiment
        ));
    }
    out
}

/// `--exp` and `--act` accept ids or registry names.
pub fn tag_from_parts(exp: &str, act: &str, registry: &Registry) -> anyhow::Result<SciTag> {
    let experiment = match exp.trim().parse::<u32>() {
        Ok(id) => id,
        Err(_) => registry.experiment_id(exp.trim()).with_context(|| {
            format!("experiment {exp:?} is neither a number nor a registry name")
        })? as u32,
    };
    let activity = match act.trim().parse::<u32>() {
        Ok(id) => id,
        Err(_) => {
            let e = u16::try_from(experiment).unwrap_or(0);
            registry.activity_id(e, act.trim()).with_context(|| {
                format!("activity {act:?} is neither a number nor an activity of experiment {experiment} in the registry")
            })? as u32
        }
    };
    SciTag::new(experiment, activity).map_err(|e: TagError| anyhow::anyhow!(e))
}

/// Fetches (`curl`, for http(s) URLs) or reads a registry, checks it, and
/// writes it to `out`. curl is already on every node of this kind and
/// handles proxies and CA bundles the way the site configured them; a Rust
/// HTTP+TLS stack would add minutes of build for one rare command.
pub fn refresh(source: &str, out: &Path) -> anyhow::Result<Registry> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let o = Command::new("curl")
            .args(["-fsSL", "--max-time", "30", source])
            .output()
            .context("running curl")?;
        if !o.status.success() {
            bail!(
                "curl {source}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        String::from_utf8(o.stdout).context("registry is not UTF-8")?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?
    };
    let registry = Registry::parse(&text).with_context(|| format!("registry from {source}"))?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(registry)
}
