//! Waiting for a content model rollout step: every member the step concerns announces the
//! version in its member value (encoders when staged; encoders and sharders, once re-filed,
//! when activated).

use coldstart_runtime::discovery::{Member, Membership, Registry, Role};
use coldstart_runtime::{ErrorCode, ServiceError, ServiceResult};

/// A step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Encoders file under the staged version too.
    Stage,
    /// Encoders and sharders run the version (sharders once their index is re-filed under it).
    Activate,
}

impl Step {
    fn roles(self) -> &'static [Role] {
        match self {
            Step::Stage => &[Role::Encoder],
            Step::Activate => &[Role::Encoder, Role::Sharder],
        }
    }
}

/// Members the step still waits for, as `node (model)`.
pub fn behind(m: &Membership, version: &str, step: Step) -> (Vec<String>, usize) {
    let done = |m: &Member| {
        m.model.as_deref() == Some(version)
            || (step == Step::Stage && m.next_model.as_deref() == Some(version))
    };
    let members: Vec<&Member> = step.roles().iter().flat_map(|&r| m.role(r)).collect();
    let left = members
        .iter()
        .filter(|m| !done(m))
        .map(|m| {
            format!(
                "{} ({})",
                m.node_id,
                m.model.as_deref().unwrap_or("no model")
            )
        })
        .collect();
    (left, members.len())
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
