//! Domain types more than one contract speaks: what a user did ([`Action`]), which inverted list
//! ([`ListKind`]), which cluster of which content model ([`ClusterKey`]), which recall channel
//! ([`Channel`]), and the one order of scored items ([`order`]).

use std::fmt;
use std::str::FromStr;

/// What a user did to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The item was shown.
    Impression,
    /// The item was opened.
    Click,
    /// Liked.
    Like,
    /// Collected (saved).
    Collect,
    /// Shared.
    Share,
    /// Commented on.
    Comment,
}

impl Action {
    /// Every action, in wire order.
    pub const ALL: [Action; 6] = [
        Action::Impression,
        Action::Click,
        Action::Like,
        Action::Collect,
        Action::Share,
        Action::Comment,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Impression => "impression",
            Action::Click => "click",
            Action::Like => "like",
            Action::Collect => "collect",
            Action::Share => "share",
            Action::Comment => "comment",
        }
    }

    /// How much the action says about interest (a share most, an impression nothing).
    pub fn weight(self) -> f64 {
        match self {
            Action::Click => 1.0,
            Action::Like | Action::Comment => 3.0,
            Action::Collect => 4.0,
            Action::Share => 5.0,
            Action::Impression => 0.0,
        }
    }

    /// An exposure the traffic controller counts (impression or click).
    pub fn is_exposure(self) -> bool {
        matches!(self, Action::Impression | Action::Click)
    }
}

/// The longest request id accepted.
pub const MAX_REQUEST_ID: usize = 64;

/// Checks a request id (of a recall answer, echoed by the events it led to): 1 to
/// [`MAX_REQUEST_ID`] characters of `A-Z a-z 0-9 . _ : -`.
pub fn check_request_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_REQUEST_ID {
        return Err(format!(
            "{} characters, expected 1 to {MAX_REQUEST_ID}",
            s.chars().count()
        ));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        Some(c) => Err(format!(
            "{c:?} in {s:?}, expected only letters, digits, '.', '_', ':' and '-'"
        )),
        None => Ok(()),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown value {s:?}, expected one of {}",
                    Action::ALL.map(Action::as_str).join(", ")
                )
            })
    }
}

/// Which kind of inverted list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    /// Items of a category, newest first.
    Category,
    /// Items of a keyword, newest first.
    Keyword,
    /// Items of a content cluster (key: a [`ClusterKey`]), newest first.
    Cluster,
    /// Every item, newest first (one list, key `""`).
    Recent,
}

impl ListKind {
    /// Every kind.
    pub const ALL: [ListKind; 4] = [
        ListKind::Category,
        ListKind::Keyword,
        ListKind::Cluster,
        ListKind::Recent,
    ];

    /// Its place in [`ListKind::ALL`] (for per-kind tables).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Category => "category",
            ListKind::Keyword => "keyword",
            ListKind::Cluster => "cluster",
            ListKind::Recent => "recent",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ListKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown list kind {s:?}, expected one of {}",
                    ListKind::ALL.map(ListKind::as_str).join(", ")
                )
            })
    }
}

/// One cluster of one content model version: the key of its inverted list, `{version}:{cluster}`
/// on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// The content model version.
    pub version: String,
    /// The cluster's number in that model's centroids.
    pub cluster: u32,
}

impl ClusterKey {
    /// The key of `cluster` under model `version`.
    pub fn new(version: impl Into<String>, cluster: u32) -> Self {
        Self {
            version: version.into(),
            cluster,
        }
    }

    /// The model version of a wire key, without parsing the rest (`None` if it has no `:`).
    pub fn version_of(key: &str) -> Option<&str> {
        key.rsplit_once(':').map(|(v, _)| v)
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.version, self.cluster)
    }
}

impl FromStr for ClusterKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (version, cluster) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("cluster key {s:?} is not `{{version}}:{{cluster}}`"))?;
        let cluster = cluster
            .parse()
            .map_err(|_| format!("cluster key {s:?}: {cluster:?} is not a cluster number"))?;
        if version.is_empty() {
            return Err(format!("cluster key {s:?} has no model version"));
        }
        Ok(Self::new(version, cluster))
    }
}

/// A recall channel: where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// The newest items of the user's heaviest categories.
    Category,
    /// The newest items of the user's heaviest keywords.
    Keyword,
    /// The newest items of the clusters of the user's last liked, collected and shared items.
    Cluster,
    /// For new users: the most engaged items before the request time.
    Popular,
    /// For new users: the most engaged items among users of their group.
    GroupPopular,
    /// For new users: the newest items of the interests they chose at onboarding.
    Onboarding,
    /// The new items whose two-tower vector is nearest the user's, from the time pools.
    TwoTower,
    /// For a new user once handed over (`aggregator.handover_events`, `handover_days`): the
    /// items nearest their two-tower vector, their ID embedding placed by the model's user
    /// method (meta, knn, group, combined), from the same pools.
    NewUserTower,
    /// The newest items overall, so an answer is never empty while items exist.
    Fallback,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 9] = [
        Channel::Category,
        Channel::Keyword,
        Channel::Cluster,
        Channel::Popular,
        Channel::GroupPopular,
        Channel::Onboarding,
        Channel::TwoTower,
        Channel::NewUserTower,
        Channel::Fallback,
    ];

    /// The name in answers, requests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Category => "category",
            Channel::Keyword => "keyword",
            Channel::Cluster => "cluster",
            Channel::Popular => "popular",
            Channel::GroupPopular => "group_popular",
            Channel::Onboarding => "onboarding",
            Channel::TwoTower => "two_tower",
            Channel::NewUserTower => "new_user_tower",
            Channel::Fallback => "fallback",
        }
    }

    /// Parses a channel name.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The one order of scored items, used by the merge, the popularity boards and the baselines:
/// higher score, then newer, then higher item id. Arguments are `(score, publish_ts, item_id)`.
pub fn order(a: (f64, i64, u64), b: (f64, i64, u64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        for k in ListKind::ALL {
            assert_eq!(k.as_str().parse::<ListKind>(), Ok(k));
        }
        let e = "pin".parse::<Action>().unwrap_err();
        assert!(e.contains("\"pin\"") && e.contains("impression"), "{e}");
    }

    #[test]
    fn cluster_keys_round_trip_and_versions_may_hold_colons() {
        let k = ClusterKey::new("v1", 3);
        assert_eq!(k.to_string(), "v1:3");
        assert_eq!("v1:3".parse::<ClusterKey>(), Ok(k));
        let odd: ClusterKey = "2026-12-01T10:00:17".parse().unwrap();
        assert_eq!(
            (odd.version.as_str(), odd.cluster),
            ("2026-12-01T10:00", 17)
        );
        assert_eq!(ClusterKey::version_of("a:b:9"), Some("a:b"));
        assert!("v1".parse::<ClusterKey>().is_err());
        assert!("v1:x".parse::<ClusterKey>().is_err());
        assert!(":4".parse::<ClusterKey>().is_err());
    }

    #[test]
    fn order_is_score_then_newer_then_higher_id() {
        let mut v = vec![(1.0, 5, 1), (2.0, 0, 0), (1.0, 5, 2), (1.0, 6, 0)];
        v.sort_by(|a, b| order(*a, *b));
        assert_eq!(v, vec![(2.0, 0, 0), (1.0, 6, 0), (1.0, 5, 2), (1.0, 5, 1)]);
    }
}
