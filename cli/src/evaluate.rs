//! `attestgate evaluate`: one decision, exactly as the node makes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attestgate_node::freshness::Freshness;
use attestgate_policy::{
    Bundle, Decision, Digest, ImageRef, ImageSubject, NamePattern, Operation, PodContext, PodRef,
    RecordContext, RegistryAttestation, RegistryAttestors, Settings, evaluate_platform,
    evaluate_with,
};
use clap::{Args as ClapArgs, ValueEnum};

use crate::Outcome;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(ClapArgs)]
pub struct Args {
    /// Bundle directory (policy, attestors/, attestations/).
    #[arg(long)]
    bundle: PathBuf,
    /// Image reference; with @sha256:… for attestation checks.
    #[arg(long)]
    image: String,
    /// The node's cluster name, GCP form location.clusterId.
    #[arg(long)]
    cluster: Option<String>,
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long)]
    service_account: Option<String>,
    /// Pod label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Pod annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "K=V")]
    annotations: Vec<String>,
    /// Node system-image patterns (repeatable); default registry.k8s.io/pause*.
    #[arg(long = "system-image", value_name = "PATTERN")]
    system_images: Vec<String>,
    /// Require attestations to name the image's own repository.
    #[arg(long)]
    strict_repository: bool,
    /// Enforce the bundle's platform policy beside the project policy, as
    /// a node with `platform_policy_enforce = true` does. Without it the
    /// platform policy's checks are shown but do not decide.
    #[arg(long)]
    platform_policy_enforce: bool,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Resolve the image at its registry and count the cosign signatures
    /// and sigstore bundles found beside it, as the node does at PullImage
    /// (SPEC §11). For an image index, its child for this machine's
    /// platform is looked up too.
    #[arg(long)]
    registry: bool,
    /// An attestor registry signatures may count for (repeatable; `*` for
    /// all, the default with --registry).
    #[arg(long = "registry-attestor", value_name = "NAME")]
    registry_attestors: Vec<String>,
    #[command(flatten)]
    reach: crate::repo::Reach,
}

/// The image as the registry names it now, and the signatures beside it,
/// as the node would offer them to the decision.
fn from_registry(
    args: &Args,
    image: &ImageRef,
) -> anyhow::Result<(ImageRef, Vec<RegistryAttestation>)> {
    use attestgate_registry::signatures::{
        Platform, SignatureLimits, lookup_image, split_repository,
    };
    let (registry, path) = split_repository(&image.repository)
        .with_context(|| format!("--image {:?} names no registry", args.image))?;
    let options = args.reach.options(&registry)?;
    let reference = match (&image.digest, &image.tag) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "latest".to_string(),
    };
    let found = crate::repo::block_on(lookup_image(
        &options,
        &registry,
        path,
        &reference,
        &Platform::this_machine(),
        &SignatureLimits::default(),
    ))?
    .with_context(|| format!("looking up {} at its registry", args.image))?;
    for problem in &found.problems {
        eprintln!("warning: a registry signature was skipped: {problem}");
    }
    for failure in &found.failed_children {
        eprintln!(
            "warning: the signatures of a platform manifest could not be looked up: {failure}"
        );
    }
    let resolved = image.with_digest(found.digest);
    let offered = found
        .signatures
        .into_iter()
        .flat_map(|(signed_digest, signatures)| {
            let found_in = image.repository.clone();
            signatures
                .into_iter()
                .map(move |signature| RegistryAttestation {
                    signature,
                    signed_digest: signed_digest.clone(),
                    found_in: found_in.clone(),
                })
        })
        .collect();
    Ok((resolved, offered))
}

fn key_value(pair: &str, flag: &str) -> anyhow::Result<(String, String)> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("--{flag} {pair:?}: expected KEY=VALUE"),
    }
}

/// The bundle at `dir` for deciding the image `digest`: through the index
/// the node keeps beside the bundle when there is one made for its files as
/// they are, so that only the image's attestations are read; else the whole
/// bundle, as the index would have given the same decision. Never writes an
/// index: evaluating changes nothing on the node.
fn load(dir: &Path, digest: Option<&Digest>) -> anyhow::Result<Bundle> {
    if let Some(digest) = digest
        && let Ok(bundle) = attestgate_node::store::read_indexed(dir, &[digest])
    {
        return Ok(bundle);
    }
    let bundle = Bundle::load(dir).map_err(|e| {
        let all: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid bundle {}:\n  {}", dir.display(), all.join("\n  "))
    })?;
    for warning in bundle.warnings() {
        eprintln!("warning: skipped: {warning}");
    }
    Ok(bundle)
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let image =
        ImageRef::parse(&args.image).with_context(|| format!("--image {:?}", args.image))?;
    let (image, offered) = if args.registry {
        from_registry(&args, &image)?
    } else {
        anyhow::ensure!(
            args.registry_attestors.is_empty(),
            "--registry-attestor needs --registry"
        );
        (image, Vec::new())
    };
    let bundle = load(&args.bundle, image.digest.as_ref())?;
    let mut settings = Settings {
        cluster: args.cluster.clone(),
        strict_repository: args.strict_repository,
        platform_policy_enforce: args.platform_policy_enforce,
        ..Settings::default()
    };
    if args.registry {
        settings.registry_attestors = if args.registry_attestors.is_empty() {
            RegistryAttestors::All
        } else {
            RegistryAttestors::from_list(&args.registry_attestors)
        };
    }
    if !args.system_images.is_empty() {
        settings.system_images = args
            .system_images
            .iter()
            .map(|p| NamePattern::parse(p).with_context(|| format!("--system-image {p:?}")))
            .collect::<anyhow::Result<_>>()?;
    }
    let mut pod = PodContext {
        namespace: args.namespace.clone(),
        service_account: args.service_account.clone(),
        ..PodContext::default()
    };
    for l in &args.labels {
        let (k, v) = key_value(l, "label")?;
        pod.labels.insert(k, v);
    }
    for a in &args.annotations {
        let (k, v) = key_value(a, "annotation")?;
        pod.annotations.insert(k, v);
    }
    // As the node decides: a synced bundle past its expiry decides nothing.
    let freshness = Freshness::of(&args.bundle)
        .map_err(|e| anyhow::anyhow!("invalid bundle {}:\n  {e}", args.bundle.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let mut decision = match freshness.and_then(|f| f.lapsed(now)) {
        Some(why) => Decision::no_policy_because(ImageSubject::from_ref(&args.image, &image), why),
        None => evaluate_with(&bundle, &settings, &args.image, &image, &pod, &offered),
    };
    // Shown even when it does not decide (`enforced: false`), so a
    // pipeline sees what the platform policy would say before a node
    // enforces it.
    if decision.platform_policy.is_none() && freshness.and_then(|f| f.lapsed(now)).is_none() {
        decision.platform_policy = evaluate_platform(&bundle, &settings, &image, &pod, &offered);
    }
    match args.output {
        Output::Text => {
            let verdict = if decision.allowed { "ALLOW" } else { "DENY" };
            println!("{verdict} {}: {}", decision.reason, decision.explanation());
            for a in &decision.attestors {
                let mark = if a.satisfied { "ok  " } else { "FAIL" };
                println!("  {mark} {}: {}", a.name, a.detail);
            }
            if let Some(platform) = &decision.platform_policy {
                let verdict = if platform.conforms {
                    "conforms"
                } else {
                    "does not conform"
                };
                let enforced = if platform.enforced {
                    "enforced"
                } else {
                    "not enforced"
                };
                println!(
                    "platform policy ({enforced}): {verdict}: {}",
                    platform.summary()
                );
                for check in &platform.checks {
                    let mark = if check.passed { "ok  " } else { "FAIL" };
                    println!("  {mark} {} ({}): {}", check.name, check.kind, check.detail);
                }
                for error in &platform.config_errors {
                    println!("  config error: {error}");
                }
            }
        }
        Output::Json => {
            let ctx = RecordContext {
                operation: Operation::Evaluate,
                time: time::OffsetDateTime::now_utc(),
                pod: args.namespace.as_ref().map(|ns| PodRef {
                    namespace: Some(ns.clone()),
                    name: None,
                    uid: None,
                }),
                container: None,
                container_id: None,
                action: None,
                cluster: args.cluster.clone(),
                bundle: Some(attestgate_policy::decision::BundleRef {
                    digest: bundle.digest().to_string(),
                    loaded_at: attestgate_policy::decision::format_time(now),
                    version: freshness.map(|f| f.version),
                    expires: freshness.map(|f| attestgate_policy::decision::format_time(f.expires)),
                }),
            };
            println!("{}", decision.record_json(&ctx));
        }
    }
    Ok(if decision.allowed {
        Outcome::Success
    } else {
        Outcome::Deny
    })
}
