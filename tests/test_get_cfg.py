"""get_cfg(): every caller gets its own unfrozen copy of the defaults."""

from paa_core.config import cfg, get_cfg


def test_get_cfg_copies_do_not_leak_into_each_other_or_the_defaults():
    first = get_cfg()
    first.merge_from_list(["MODEL.PAA.TOPK", 3, "INPUT.MIN_SIZE_TEST", 600])
    first.freeze()
    second = get_cfg()
    assert (second.MODEL.PAA.TOPK, second.INPUT.MIN_SIZE_TEST) == (9, 800)
    assert (cfg.MODEL.PAA.TOPK, cfg.INPUT.MIN_SIZE_TEST) == (9, 800)
    assert not second.is_frozen() and not cfg.is_frozen()
    assert second == cfg and second is not cfg
