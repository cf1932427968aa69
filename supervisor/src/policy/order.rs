//! Start order and groups across policies.
//!
//! - [`check_order`] (part of [`check_across`](super::check_across)): an
//!   `after` entry must name a module that has a policy file in the
//!   directory; `after` must not make a cycle; the members of a group must
//!   agree on its `strategy`.
//! - [`start_order`]: the order the supervisor starts modules in (and
//!   stops them in, reversed).
//!
//! A module whose own policy is invalid still counts as present for
//! `after`: it fails on its own, and whoever starts after it waits. Cycles
//! and strategies are checked among the policies valid when the checks
//! begin, so the errors do not depend on which file is looked at first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::path::Path;

use super::{Loaded, Policy, PolicyError};

/// Checks `after` and `[group]` across `loaded` (every policy file of one
/// directory), turning each offending policy into its errors.
pub(super) fn check_order(loaded: &mut [Loaded]) {
    let mut errors: BTreeMap<usize, Vec<PolicyError>> = BTreeMap::new();
    {
        let present: BTreeSet<&str> = loaded.iter().map(|l| l.name.as_str()).collect();
        let valid: Vec<(usize, &Policy)> = loaded
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.result.as_ref().ok().map(|p| (i, p)))
            .collect();
        for &(i, p) in &valid {
            for (other, &(line, col)) in p.after.iter().zip(&p.after_locations) {
                if present.contains(other.as_str()) {
                    continue;
                }
                let dir = p.file.parent().unwrap_or(Path::new("."));
                errors.entry(i).or_default().push(PolicyError {
                    file: p.file.clone(),
                    line,
                    col,
                    key: "module.after".into(),
                    reason: format!(
                        "after names \"{other}\", which has no policy in {}",
                        dir.display()
                    ),
                    fix: format!("add {other}.toml or remove it from after"),
                });
            }
        }
        for (i, error) in cycle_errors(&valid) {
            errors.entry(i).or_default().push(error);
        }
        for (i, error) in strategy_errors(&valid) {
            errors.entry(i).or_default().push(error);
        }
    }
    for (i, mut found) in errors {
        found.sort_by_key(|e| (e.line, e.col));
        loaded[i].result = Err(found);
    }
}

/// An error at the `after` entry of every policy on a cycle, naming the
/// shortest cycle through it.
fn cycle_errors(valid: &[(usize, &Policy)]) -> Vec<(usize, PolicyError)> {
    let node: HashMap<&str, usize> = valid
        .iter()
        .enumerate()
        .map(|(n, (_, p))| (p.name.as_str(), n))
        .collect();
    // Per node: (entry index in `after`, node it names), in written order.
    let edges: Vec<Vec<(usize, usize)>> = valid
        .iter()
        .map(|(_, p)| {
            p.after
                .iter()
                .enumerate()
                .filter_map(|(k, other)| node.get(other.as_str()).map(|&n| (k, n)))
                .collect()
        })
        .collect();
    let mut found = Vec::new();
    for (start, &(i, p)) in valid.iter().enumerate() {
        let Some((entry, cycle)) = shortest_cycle(&edges, start) else {
            continue;
        };
        let names: Vec<&str> = cycle.iter().map(|&n| valid[n].1.name.as_str()).collect();
        let (line, col) = p.after_locations[entry];
        found.push((
            i,
            PolicyError {
                file: p.file.clone(),
                line,
                col,
                key: "module.after".into(),
                reason: format!("start order cycle: {}", names.join(" → ")),
                fix: "remove one of these from an `after` list".into(),
            },
        ));
    }
    found
}

/// The shortest path from `start` back to itself (breadth first, edges in
/// written order), as nodes from `start` to `start`, with the index of the
/// `after` entry of `start` it leaves by.
fn shortest_cycle(edges: &[Vec<(usize, usize)>], start: usize) -> Option<(usize, Vec<usize>)> {
    let mut parent: Vec<Option<usize>> = vec![None; edges.len()];
    let mut queue = VecDeque::new();
    for &(entry, next) in &edges[start] {
        if next == start {
            return Some((entry, vec![start, start]));
        }
        if parent[next].is_none() {
            parent[next] = Some(start);
            queue.push_back(next);
        }
    }
    while let Some(n) = queue.pop_front() {
        for &(_, next) in &edges[n] {
            if next == start {
                let mut path = vec![start, n];
                let mut at = n;
                while let Some(before) = parent[at].filter(|&b| b != start) {
                    path.push(before);
                    at = before;
                }
                path.push(start);
                path.reverse();
                let first = path[1];
                let entry = edges[start]
                    .iter()
                    .find(|&&(_, to)| to == first)
                    .map_or(0, |&(k, _)| k);
                return Some((entry, path));
            }
            if parent[next].is_none() && next != start {
                parent[next] = Some(n);
                queue.push_back(next);
            }
        }
    }
    None
}

/// An error on each group member whose strategy differs from the group's
/// first member in file-name order.
fn strategy_errors(valid: &[(usize, &Policy)]) -> Vec<(usize, PolicyError)> {
    let mut groups: BTreeMap<&str, Vec<(usize, &Policy)>> = BTreeMap::new();
    for &(i, p) in valid {
        if let Some(g) = &p.group {
            groups.entry(g.name.as_str()).or_default().push((i, p));
        }
    }
    let mut found = Vec::new();
    for (name, mut members) in groups {
        members.sort_by(|a, b| a.1.file.cmp(&b.1.file));
        let first = members[0].1;
        let want = first.strategy();
        for &(i, p) in &members[1..] {
            let Some(g) = p.group.as_ref().filter(|g| g.strategy != want) else {
                continue;
            };
            found.push((
                i,
                PolicyError {
                    file: p.file.clone(),
                    line: g.location.0,
                    col: g.location.1,
                    key: "group.strategy".into(),
                    reason: format!(
                        "group \"{name}\" has strategy \"{}\" here but \"{want}\" in {}, its first member",
                        g.strategy,
                        first.file.display()
                    ),
                    fix: format!(
                        "give every member of group \"{name}\" the same strategy (a [group] without one is one_for_one)"
                    ),
                },
            ));
        }
    }
    found
}

/// Indices of the `Some` policies in the order to start them: each after
/// every present module its `after` names, ties broken by index. Entries
/// naming absent (`None` or unknown) modules, and a module naming itself,
/// are ignored. Should a cycle have slipped through, the modules left over
/// follow in index order. Stopping goes in the reverse order.
pub fn start_order(policies: &[Option<&Policy>]) -> Vec<usize> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, p) in policies.iter().enumerate() {
        if let Some(p) = p {
            index.entry(p.name.as_str()).or_insert(i);
        }
    }
    let mut waiting_for = vec![0usize; policies.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); policies.len()];
    for (i, p) in policies.iter().enumerate() {
        let Some(p) = p else { continue };
        let before: BTreeSet<usize> = p
            .after
            .iter()
            .filter_map(|other| index.get(other.as_str()).copied())
            .filter(|&j| j != i)
            .collect();
        waiting_for[i] = before.len();
        for j in before {
            dependents[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = policies
        .iter()
        .enumerate()
        .filter(|(i, p)| p.is_some() && waiting_for[*i] == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut placed = vec![false; policies.len()];
    let mut order = Vec::with_capacity(index.len());
    while let Some(Reverse(i)) = ready.pop() {
        placed[i] = true;
        order.push(i);
        for &d in &dependents[i] {
            waiting_for[d] -= 1;
            if waiting_for[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order.extend((0..policies.len()).filter(|&i| policies[i].is_some() && !placed[i]));
    order
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::{check_across, load_dir, load_file};

    /// A policy directory with one `m.wasm`.
    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
            Self { dir }
        }

        /// Writes `<name>.toml`: `[module]` with `extra` after its `wasm`.
        fn policy(&self, name: &str, extra: &str) -> PathBuf {
            let path = self.dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, format!("[module]\nwasm = \"m.wasm\"\n{extra}")).unwrap();
            path
        }

        /// Every policy, after the checks across policies: name → errors
        /// as printed (empty if valid).
        fn check(&self) -> BTreeMap<String, Vec<String>> {
            let loaded = load_dir(self.dir.path()).unwrap();
            check_across(loaded, &self.dir.path().join("state"), &[])
                .into_iter()
                .map(|l| {
                    let errors = match &l.result {
                        Ok(_) => Vec::new(),
                        Err(e) => e.iter().map(ToString::to_string).collect(),
                    };
                    (l.name, errors)
                })
                .collect()
        }

        fn at(&self, name: &str, line: usize, col: usize, rest: &str) -> String {
            let file = self.dir.path().join(format!("{name}.toml"));
            format!("{}:{line}:{col}: {rest}", file.display())
        }
    }

    #[test]
    fn after_must_name_a_policy_in_the_directory() {
        let d = Dir::new();
        d.policy("logger", "after = [\"clock\", \"modbus-poller\"]\n");
        d.policy("clock", "");
        // Present but invalid: not an error for whoever starts after it.
        d.policy("broken", "[resources]\npids = 0\n");
        d.policy("alarm", "after = [\"broken\"]\n");
        let checked = d.check();
        let dir = d.dir.path().display();
        assert_eq!(
            checked["logger"],
            vec![d.at(
                "logger",
                3,
                19,
                &format!(
                    "after names \"modbus-poller\", which has no policy in {dir}; add modbus-poller.toml or remove it from after"
                )
            )]
        );
        assert!(checked["clock"].is_empty());
        assert!(checked["alarm"].is_empty(), "{:?}", checked["alarm"]);
        assert_eq!(checked["broken"].len(), 1);
        assert!(checked["broken"][0].contains("resources.pids"));
    }

    #[test]
    fn a_self_reference_is_a_cycle() {
        let d = Dir::new();
        let file = d.policy("poller", "after = [\"poller\"]\n");
        let errors: Vec<String> = load_file(&file)
            .result
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            vec![d.at(
                "poller",
                3,
                10,
                "start order cycle: poller → poller; remove one of these from an `after` list"
            )]
        );
        assert_eq!(d.check()["poller"], errors);
    }

    #[test]
    fn every_policy_on_a_cycle_gets_an_error_at_its_after_entry() {
        let d = Dir::new();
        d.policy("a", "after = [\"d\", \"b\"]\n");
        d.policy("b", "after = [\"c\"]\n");
        d.policy("c", "# c waits for a\nafter = [\"a\"]\n");
        // Outside the cycle, though after a member of it.
        d.policy("d", "");
        d.policy("e", "after = [\"a\"]\n");
        let checked = d.check();
        let fix = "remove one of these from an `after` list";
        assert_eq!(
            checked["a"],
            vec![d.at(
                "a",
                3,
                15,
                &format!("start order cycle: a → b → c → a; {fix}")
            )]
        );
        assert_eq!(
            checked["b"],
            vec![d.at(
                "b",
                3,
                10,
                &format!("start order cycle: b → c → a → b; {fix}")
            )]
        );
        assert_eq!(
            checked["c"],
            vec![d.at(
                "c",
                4,
                10,
                &format!("start order cycle: c → a → b → c; {fix}")
            )]
        );
        assert!(checked["d"].is_empty());
        assert!(checked["e"].is_empty());
    }

    #[test]
    fn two_cycles_through_one_module_each_name_the_shortest() {
        let d = Dir::new();
        d.policy("a", "after = [\"b\", \"c\"]\n");
        d.policy("b", "after = [\"c\"]\n");
        d.policy("c", "after = [\"a\"]\n");
        let checked = d.check();
        assert!(checked["a"][0].contains("start order cycle: a → c → a;"));
        assert!(
            checked["a"][0].contains("a.toml:3:15:"),
            "{:?}",
            checked["a"]
        );
        assert!(checked["b"][0].contains("start order cycle: b → c → a → b;"));
        assert!(checked["c"][0].contains("start order cycle: c → a → c;"));
    }

    #[test]
    fn group_members_must_agree_on_the_strategy() {
        let d = Dir::new();
        d.policy(
            "a",
            "[group]\nname = \"line\"\nstrategy = \"one_for_all\"\n",
        );
        // No strategy: one_for_one, which differs.
        d.policy("b", "[group]\nname = \"line\"\n");
        d.policy(
            "c",
            "[group]\nname = \"line\"\nstrategy = \"one_for_all\"\n",
        );
        d.policy(
            "d",
            "[group]\nname = \"line\"\nstrategy = \"rest_for_one\"\n",
        );
        // Another group, and no group.
        d.policy(
            "e",
            "[group]\nname = \"other\"\nstrategy = \"rest_for_one\"\n",
        );
        d.policy("f", "");
        let checked = d.check();
        let first = d.dir.path().join("a.toml");
        let fix = "give every member of group \"line\" the same strategy (a [group] without one is one_for_one)";
        assert!(checked["a"].is_empty());
        assert_eq!(
            checked["b"],
            vec![d.at(
                "b",
                4,
                8,
                &format!(
                    "group \"line\" has strategy \"one_for_one\" here but \"one_for_all\" in {}, its first member; {fix}",
                    first.display()
                )
            )]
        );
        assert!(checked["c"].is_empty());
        assert_eq!(
            checked["d"],
            vec![d.at(
                "d",
                5,
                12,
                &format!(
                    "group \"line\" has strategy \"rest_for_one\" here but \"one_for_all\" in {}, its first member; {fix}",
                    first.display()
                )
            )]
        );
        assert!(checked["e"].is_empty() && checked["f"].is_empty());
    }

    /// Policies named `names[i]`, each with its `after` list.
    fn policies(graph: &[(&str, &[&str])]) -> (Dir, Vec<Policy>) {
        let d = Dir::new();
        let loaded = graph
            .iter()
            .map(|(name, after)| {
                let mut p = load_file(&d.policy(name, "")).result.unwrap();
                p.after = after.iter().map(ToString::to_string).collect();
                p
            })
            .collect();
        (d, loaded)
    }

    #[test]
    fn start_order_follows_after_and_breaks_ties_by_index() {
        let (_d, p) = policies(&[
            ("logger", &["poller", "clock"]),
            ("poller", &["clock"]),
            ("alarm", &[]),
            ("clock", &[]),
            ("display", &["logger"]),
        ]);
        let all: Vec<Option<&Policy>> = p.iter().map(Some).collect();
        assert_eq!(start_order(&all), vec![2, 3, 1, 0, 4]);
        // Nothing named: index order.
        let (_e, q) = policies(&[("x", &[]), ("y", &[]), ("z", &[])]);
        let all: Vec<Option<&Policy>> = q.iter().map(Some).collect();
        assert_eq!(start_order(&all), vec![0, 1, 2]);
        assert!(start_order(&[]).is_empty());
    }

    #[test]
    fn start_order_skips_absent_modules_and_what_names_them() {
        let (_d, p) = policies(&[
            ("logger", &["poller", "nowhere"]),
            ("poller", &[]),
            ("alarm", &["logger"]),
        ]);
        // poller's policy is invalid (None): logger is not held back by it.
        let some = [Some(&p[0]), None, Some(&p[2])];
        assert_eq!(start_order(&some), vec![0, 2]);
        let all = [Some(&p[0]), Some(&p[1]), Some(&p[2])];
        assert_eq!(start_order(&all), vec![1, 0, 2]);
    }

    #[test]
    fn start_order_survives_a_cycle() {
        let (_d, p) = policies(&[
            ("a", &["b"]),
            ("b", &["a"]),
            ("c", &[]),
            ("d", &["a"]),
            ("self", &["self"]),
        ]);
        let all: Vec<Option<&Policy>> = p.iter().map(Some).collect();
        // c and self (a self-reference is ignored) first; then the rest.
        assert_eq!(start_order(&all), vec![2, 4, 0, 1, 3]);
    }
}
