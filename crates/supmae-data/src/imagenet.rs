//! The ImageNet-1k class list: 1000 WordNet ids in sorted order (class `i` of every official
//! checkpoint is line `i`), with human-readable names. Source: timm's
//! `imagenet_synsets.txt` / `imagenet_synset_to_lemma.txt` (Apache-2.0, see
//! `assets/NOTICE.md`).

use std::sync::LazyLock;

const TSV: &str = include_str!("../assets/imagenet_classes.tsv");

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

#[cfg(test)]
mod tests {
    use super::*;

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
