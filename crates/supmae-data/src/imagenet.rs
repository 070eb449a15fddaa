//! The ImageNet-1k class list: 1000 WordNet ids in sorted order (class `i` of every official
//! checkpoint is line `i`), with human-readable names; and the 200-class subsets of
//! ImageNet-A and ImageNet-R. Source: timm's `imagenet_synsets.txt` /
//! `imagenet_synset_to_lemma.txt` / `imagenet_{a,r}_synsets.txt` (Apache-2.0, see
//! `assets/NOTICE.md`).

use std::sync::LazyLock;

const TSV: &str = include_str!("../assets/imagenet_classes.tsv");
const A_WNIDS: &str = include_str!("../assets/imagenet_a_wnids.txt");
const R_WNIDS: &str = include_str!("../assets/imagenet_r_wnids.txt");

/// `(wnid, names)` of the 1000 ImageNet-1k classes, in class-index order.
pub static IMAGENET_1K: LazyLock<Vec<(&'static str, &'static str)>> = LazyLock::new(|| {
    TSV.lines()
        .filter(|l| !l.is_empty())
        .map(|line| line.split_once('\t').unwrap_or((line, "")))
        .collect()
});

/// The human-readable name of ImageNet-1k class `index` (e.g. `tabby, tabby cat` for 281).
pub fn imagenet_class_name(index: usize) -> Option<&'static str> {
    IMAGENET_1K.get(index).map(|(_, name)| *name)
}

/// The class index of a wnid.
pub fn imagenet_class_index(wnid: &str) -> Option<usize> {
    IMAGENET_1K.binary_search_by(|(w, _)| (*w).cmp(wnid)).ok()
}

/// The 200 wnids of ImageNet-A's classes, sorted (its folder order).
pub static IMAGENET_A_WNIDS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| A_WNIDS.split_whitespace().collect());

/// The 200 wnids of ImageNet-R's classes, sorted (its folder order).
pub static IMAGENET_R_WNIDS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| R_WNIDS.split_whitespace().collect());

/// The 1000 ImageNet-1k wnids, in class-index order.
pub fn imagenet_wnids() -> Vec<String> {
    IMAGENET_1K.iter().map(|(w, _)| w.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_a_and_r_subsets_are_200_sorted_imagenet_classes() {
        for (list, first) in [(&*IMAGENET_A_WNIDS, 6), (&*IMAGENET_R_WNIDS, 1)] {
            assert_eq!(list.len(), 200);
            assert!(list.windows(2).all(|w| w[0] < w[1]));
            assert!(list.iter().all(|w| imagenet_class_index(w).is_some()));
            // timm's imagenet_{a,r}_indices.txt start with 6 and 1.
            assert_eq!(imagenet_class_index(list[0]), Some(first));
        }
    }

    #[test]
    fn the_list_is_the_sorted_1000_wnids() {
        assert_eq!(IMAGENET_1K.len(), 1000);
        assert!(IMAGENET_1K.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(IMAGENET_1K[0].0, "n01440764");
        assert!(IMAGENET_1K[0].1.starts_with("tench"));
        assert_eq!(IMAGENET_1K[281].0, "n02123045");
        assert_eq!(imagenet_class_name(281), Some("tabby, tabby cat"));
        assert_eq!(imagenet_class_index("n02123045"), Some(281));
        assert_eq!(imagenet_class_index("n00000000"), None);
    }
}
