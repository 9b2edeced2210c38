//! Union-find with a veto: two clusters join only if every name in one
//! agrees with every name in the other and they hold at most one existing
//! master between them. Path halving + union by size.

use smallvec::SmallVec;

use super::names::FoldedName;

/// A cluster's representative names: most clusters hold one to three
/// records, so they live inline (a heap Vec per node was a million small
/// allocations on a 1M-row run).
type Names = SmallVec<[u32; 4]>;

/// Why two clusters were kept apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Veto {
    /// Names disagree: (a name of cluster a, a name of cluster b).
    Names(usize, usize),
    /// Each cluster already belongs to a different existing master.
    TwoMasters(usize, usize),
}

pub struct Clusters<'a> {
    parent: Vec<u32>,
    size: Vec<u32>,
    /// Per root: nodes whose (distinct, non-empty) names stand for the cluster.
    names: Vec<Names>,
    /// Per root: the existing master node in the cluster, if any.
    pub master: Vec<Option<u32>>,
    node_names: &'a [FoldedName],
    threshold: f64,
    check_names: bool,
}

/// Keep at most this many distinct names per cluster; past it, typos of one
/// name add nothing to the check.
const MAX_NAMES: usize = 12;

impl<'a> Clusters<'a> {
    pub fn new(
        node_names: &'a [FoldedName],
        is_master: impl Fn(usize) -> bool,
        threshold: f64,
        check_names: bool,
    ) -> Self {
        let n = node_names.len();
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            names: (0..n)
                .map(|i| {
                    if node_names[i].is_empty() {
                        Names::new()
                    } else {
                        smallvec::smallvec![i as u32]
                    }
                })
                .collect(),
            master: (0..n).map(|i| is_master(i).then_some(i as u32)).collect(),
            node_names,
            threshold,
            check_names,
        }
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let p = self.parent[x] as usize;
            self.parent[x] = self.parent[p];
            x = self.parent[x] as usize;
        }
        x
    }

    #[cfg(test)]
    pub fn master_of(&mut self, x: usize) -> Option<usize> {
        let r = self.find(x);
        self.master[r].map(|m| m as usize)
    }

    /// Join unconditionally (a record already linked to its master).
    pub fn force(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.join(ra, rb);
        }
    }

    /// Join the clusters of `a` and `b` unless vetoed.
    pub fn try_union(&mut self, a: usize, b: usize) -> Result<bool, Veto> {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return Ok(false);
        }
        if let (Some(ma), Some(mb)) = (self.master[ra], self.master[rb]) {
            return Err(Veto::TwoMasters(ma as usize, mb as usize));
        }
        if self.check_names {
            for &x in &self.names[ra] {
                for &y in &self.names[rb] {
                    if !self.node_names[x as usize].agrees(&self.node_names[y as usize], self.threshold) {
                        return Err(Veto::Names(x as usize, y as usize));
                    }
                }
            }
        }
        self.join(ra, rb);
        Ok(true)
    }

    fn join(&mut self, ra: usize, rb: usize) {
        let (big, small) = if self.size[ra] >= self.size[rb] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        let moved = std::mem::take(&mut self.names[small]);
        for x in moved {
            let dup = self.names[big]
                .iter()
                .any(|&y| self.node_names[y as usize] == self.node_names[x as usize]);
            if !dup && self.names[big].len() < MAX_NAMES {
                self.names[big].push(x);
            }
        }
        if self.master[big].is_none() {
            self.master[big] = self.master[small];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vetoes_disagreeing_names_even_through_a_nameless_bridge() {
        let names = vec![
            FoldedName::new(Some("John"), Some("Roy")),
            FoldedName::default(),
            FoldedName::new(Some("Jane"), Some("Roy")),
        ];
        let mut c = Clusters::new(&names, |_| false, 0.85, true);
        assert_eq!(c.try_union(0, 1), Ok(true));
        assert!(matches!(c.try_union(1, 2), Err(Veto::Names(0, 2))));
        assert_ne!(c.find(0), c.find(2));
    }

    #[test]
    fn never_joins_two_masters() {
        let names = vec![FoldedName::default(); 3];
        let mut c = Clusters::new(&names, |i| i < 2, 0.85, true);
        assert_eq!(c.try_union(0, 2), Ok(true));
        assert_eq!(c.try_union(2, 1), Err(Veto::TwoMasters(0, 1)));
        assert_eq!(c.master_of(2), Some(0));
    }
}
