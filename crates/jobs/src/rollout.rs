//! A content model rollout: stage a version (`models/content-next`: encoders file new items under
//! it too), complete its forward index with the items published since training, activate it
//! (`models/content`: encoders swap, sharders re-file), and wait for each step: every member the
//! step concerns announces the version in its member value (encoders when staged; encoders and
//! sharders, once re-filed, when activated). `coldstart train clusters` drives it.

use coldstart_artifact::{ContentModel, ModelFiles, ModelRef};
use coldstart_contracts::encoder::Item;
use coldstart_contracts::sharder::Assignment;
use coldstart_models::encoder::SentenceEncoder;
use coldstart_models::kmeans;
use coldstart_runtime::discovery::{Member, Membership, Registry, Role};
use coldstart_runtime::{ErrorCode, ServiceError, ServiceResult};
use std::collections::HashSet;
use std::path::Path;

/// The staged version's manifest, beside the final one in the version's folder.
pub const STAGED_MANIFEST: &str = "staged.json";
/// The staged version's forward index, beside the final one.
pub const STAGED_ASSIGNMENTS: &str = "assignments-staged.parquet";

/// The staged version `version` under `out`, exactly as the encoders loaded it: the model and
/// the forward index it was trained with.
pub fn open_staged(out: &Path, version: &str) -> ServiceResult<(ContentModel, Vec<Assignment>)> {
    let files = ModelRef::of_manifest(&out.join(version).join(STAGED_MANIFEST))
        .and_then(|r| ModelFiles::open(&r))?;
    let (encoder, centroids) = (files.encoder()?, files.centroids()?);
    let prior = files.assignments(centroids.k(), centroids.dim())?;
    let model = ContentModel {
        version: version.to_string(),
        encoder,
        centroids,
    };
    Ok((model, prior))
}

/// The forward index `prior` completed with the `items` it does not hold (published since
/// training), each assigned to its nearest centroid with its vector. Returns the whole index and
/// how many were added. CPU work: run it off the async runtime.
pub fn complete_assignments(
    model: &ContentModel,
    prior: Vec<Assignment>,
    items: &[Item],
    backbone: Option<&dyn SentenceEncoder>,
) -> crate::Result<(Vec<Assignment>, usize)> {
    let known: HashSet<u64> = prior.iter().map(|p| p.item_id).collect();
    let fresh: Vec<&Item> = items
        .iter()
        .filter(|it| !known.contains(&it.item_id))
        .collect();
    let owned: Vec<Item> = fresh.iter().map(|&it| it.clone()).collect();
    let dim = model.encoder.cfg.dim;
    let feats = coldstart_encoder::training::item_features(&owned, &model.encoder.cfg, backbone)?;
    let mut points = Vec::with_capacity(fresh.len() * dim);
    for f in &feats {
        points.extend_from_slice(model.encoder.encode(f)?.as_slice());
    }
    let labels = if fresh.is_empty() {
        Vec::new()
    } else {
        model.centroids.assign(&points, 1, kmeans::CHUNK)?.0
    };
    let mut all = prior;
    all.extend(
        fresh
            .iter()
            .zip(labels)
            .zip(points.chunks(dim))
            .map(|((it, cluster), v)| Assignment {
                item_id: it.item_id,
                cluster,
                publish_ts: it.publish_ts,
                vector: Some(v.to_vec()),
            }),
    );
    Ok((all, fresh.len()))
}

/// Names model `r` under `models/{name}` (`content-next` stages, `content` activates); returns
/// the value written.
pub async fn name_model(reg: &dyn Registry, name: &str, r: &ModelRef) -> ServiceResult<String> {
    let value = serde_json::to_string(r)
        .map_err(|e| ServiceError::internal(format!("model reference: {e}")))?;
    reg.put_model(name, &value).await?;
    Ok(value)
}

/// A step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Encoders file under the staged version too.
    Stage,
    /// Encoders and sharders run the version (sharders once their index is re-filed under it).
    Activate,
    /// Every sharder has built the staged two-tower version's pools beside the running one's.
    StageTwoTower,
    /// Encoders, sharders (once their pools are re-filed) and aggregators run the two-tower
    /// model version.
    TwoTower,
}

impl Step {
    fn roles(self) -> &'static [Role] {
        match self {
            Step::Stage => &[Role::Encoder],
            Step::StageTwoTower => &[Role::Sharder],
            Step::Activate => &[Role::Encoder, Role::Sharder],
            Step::TwoTower => &[Role::Encoder, Role::Sharder, Role::Aggregator],
        }
    }
}

/// Members the step still waits for, as `node (model)`.
pub fn behind(m: &Membership, version: &str, step: Step) -> (Vec<String>, usize) {
    fn runs(m: &Member, step: Step) -> Option<&str> {
        match step {
            Step::TwoTower | Step::StageTwoTower => m.tower_model.as_deref(),
            Step::Stage | Step::Activate => m.model.as_deref(),
        }
    }
    let done = |m: &Member| {
        runs(m, step) == Some(version)
            || (step == Step::Stage && m.next_model.as_deref() == Some(version))
            || (step == Step::StageTwoTower && m.next_tower_model.as_deref() == Some(version))
    };
    let members: Vec<&Member> = step.roles().iter().flat_map(|&r| m.role(r)).collect();
    let left = members
        .iter()
        .filter(|m| !done(m))
        .map(|m| format!("{} ({})", m.node_id, runs(m, step).unwrap_or("no model")))
        .collect();
    (left, members.len())
}

/// Rolls a saved two-tower model out: stages it (`models/two-tower-next`), `wait`s until every
/// sharder has built its pools, then activates it (`models/two-tower`) and `wait`s until every
/// encoder, sharder and aggregator runs it. Aggregators swap only when the pools they will search
/// are complete on every sharder, and those still on the replaced version find its pools kept.
pub async fn roll_out_two_tower<F, Fut>(
    reg: &dyn Registry,
    r: &ModelRef,
    mut wait: F,
) -> ServiceResult<()>
where
    F: FnMut(Step) -> Fut,
    Fut: std::future::Future<Output = ServiceResult<()>>,
{
    name_model(reg, coldstart_artifact::TWO_TOWER_MODEL_NEXT, r).await?;
    wait(Step::StageTwoTower).await?;
    name_model(reg, coldstart_artifact::TWO_TOWER_MODEL, r).await?;
    wait(Step::TwoTower).await
}

/// Waits until every member `step` concerns announces `version`; `progress` hears who is still
/// behind after each membership change. Fails naming them after `wait`.
pub async fn wait_for(
    reg: &dyn Registry,
    version: &str,
    step: Step,
    wait: std::time::Duration,
    mut progress: impl FnMut(&[String]),
) -> ServiceResult<()> {
    let mut watch = reg.watch();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (left, total) = behind(&watch.borrow_and_update(), version, step);
        if left.is_empty() && total > 0 {
            return Ok(());
        }
        progress(&left);
        match tokio::time::timeout_at(deadline, watch.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ServiceError::unavailable("membership watch ended")),
            Err(_) => {
                return Err(ServiceError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "after {} s, not every member runs {version}: {} (their logs say why)",
                        wait.as_secs(),
                        if left.is_empty() {
                            "no member of the roles".to_string()
                        } else {
                            left.join(", ")
                        }
                    ),
                ))
            }
        }
    }
}
