import itertools
import json

import numpy as np
import pytest
import yaml

from supernet import ArchError, Dim
from supernet.models.vit import ViTSpace


def tiny_space(bits=(32,)):
    return ViTSpace(resolution=[4, 8], depth=[1, 2, 3], embed_dim=[8, 16], num_heads=[1, 2], mlp_ratio=[1.0, 2.0],
                    bits=bits, patch_size=4, in_chans=3, num_classes=2, head_dim=4)


@pytest.mark.parametrize("bits", [(32,), (8, 32)])
def test_cardinality_matches_brute_force_enumeration(bits):
    space = tiny_space(bits)
    bounds = space.gene_upper_bounds()
    distinct = {space.key(space.decode(g)) for g in itertools.product(*(range(b + 1) for b in bounds))}
    assert space.cardinality() == len(distinct)
    # and it is far below the number of gene vectors: inactive entries are not counted
    assert len(distinct) < np.prod(bounds + 1)


def test_encode_decode_round_trip_for_sampled_and_extreme_archs():
    space = tiny_space((4, 8, 32))
    rng = np.random.default_rng(0)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(200)]:
        genes = space.encode(arch)
        assert genes.shape == (space.num_genes,)
        assert np.all((genes >= 0) & (genes <= space.gene_upper_bounds()))
        assert space.decode(genes) == arch
        assert json.loads(json.dumps(arch)) == arch  # JSON-serialisable as is


def test_largest_and_smallest_take_extreme_choices():
    space = tiny_space()
    assert space.largest() == {"resolution": 8, "depth": 3, "embed_dim": 16, "num_heads": [2, 2, 2],
                               "mlp_ratio": [2.0, 2.0, 2.0], "bits": [32, 32, 32]}
    assert space.smallest()["depth"] == 1 and space.smallest()["num_heads"] == [1, 1, 1]
    assert space.macs(space.smallest()) < space.macs(space.sample(1)) <= space.macs(space.largest())


def test_sample_is_reproducible_and_covers_every_choice():
    space = tiny_space()
    assert space.sample(3) == space.sample(3)
    rng = np.random.default_rng(1)
    seen = {space.sample(rng)["depth"] for _ in range(100)}
    assert seen == {1, 2, 3}


@pytest.mark.parametrize("arch_patch, key", [
    ({"depth": 4}, "depth"),
    ({"embed_dim": 12}, "embed_dim"),
    ({"num_heads": [1, 2, 7]}, "num_heads[2]"),
    ({"num_heads": [1, 2]}, "num_heads"),
    ({"mlp_ratio": "2.0"}, "mlp_ratio"),
    ({"bits": [8, 32, 32]}, "bits[0]"),
    ({"colour": "red"}, "colour"),
])
def test_validate_names_key_value_and_allowed(arch_patch, key):
    space = tiny_space()
    arch = {**space.largest(), **arch_patch}
    with pytest.raises(ArchError) as err:
        space.validate(arch)
    assert err.value.key == key
    assert key in str(err.value) and "allowed" in str(err.value)


def test_validate_reports_missing_key_and_accepts_equal_numbers():
    space = tiny_space()
    arch = space.largest()
    del arch["resolution"]
    with pytest.raises(ArchError, match="'resolution'.*missing.*\\[4, 8\\]"):
        space.validate(arch)
    loose = {**space.largest(), "embed_dim": np.int64(16), "mlp_ratio": [2, 1, 2.0000000001]}
    assert space.validate(loose) == {**space.largest(), "mlp_ratio": [2.0, 1.0, 2.0]}


def test_decode_rejects_out_of_range_genes():
    space = tiny_space()
    genes = space.encode(space.largest())
    genes[0] = 5
    with pytest.raises(ArchError, match="gene 0"):
        space.decode(genes)


def test_key_and_features_ignore_inactive_entries():
    space = tiny_space()
    a = {**space.largest(), "depth": 1, "num_heads": [2, 1, 1]}
    b = {**space.largest(), "depth": 1, "num_heads": [2, 2, 1]}
    assert a != b and space.key(a) == space.key(b)
    assert np.array_equal(space.features(a), space.features(b))
    assert len(space.features(a)) == len(space.feature_names())


def test_costs_are_consistent_and_grow_with_every_dimension():
    space = tiny_space((8, 32))
    big = space.largest()
    costs = space.layer_costs(big)
    assert sum(c["macs"] for c in costs) == space.macs(big)
    assert sum(c["params"] for c in costs) == space.params(big)
    assert space.model_size_bytes(big) == 4 * space.params(big)
    for patch in [{"depth": 2}, {"embed_dim": 8}, {"resolution": 4}, {"num_heads": [1, 2, 2]},
                  {"mlp_ratio": [1.0, 2.0, 2.0]}]:
        assert space.macs({**big, **patch}) < space.macs(big), patch
    quantized = {**big, "bits": [8, 8, 8]}
    assert space.macs(quantized) == space.macs(big)
    assert space.model_size_bytes(quantized) < space.model_size_bytes(big)


def test_dim_rejects_bad_choices():
    with pytest.raises(ValueError, match="repeated"):
        Dim("depth", (1, 1))
    with pytest.raises(ValueError, match="not multiples of patch_size"):
        ViTSpace(resolution=[10], depth=[1], embed_dim=[8], num_heads=[1], mlp_ratio=[1.0], patch_size=4,
                 in_chans=3, num_classes=2, head_dim=8)


def test_median_is_a_reproducible_mid_size_arch():
    space = tiny_space()
    median = space.median(num_samples=101, seed=3)
    assert median == space.median(num_samples=101, seed=3)
    assert space.macs(space.smallest()) < space.macs(median) < space.macs(space.largest())


def test_accuracy_features_one_hot_the_running_entries_and_zero_the_others():
    space = tiny_space((8, 32))
    arch = {"resolution": 8, "depth": 2, "embed_dim": 16, "num_heads": [1, 2, 1], "mlp_ratio": [2.0, 1.0, 1.0],
            "bits": [8, 32, 8]}
    row = dict(zip(space.feature_names(), space.features(arch), strict=True))
    assert row["resolution=8"] == 1 and row["resolution=4"] == 0 and row["depth=2"] == 1
    assert (row["num_heads[0]=1"], row["num_heads[0]=2"], row["num_heads[1]=2"]) == (1, 0, 1)
    assert (row["bits[0]=8"], row["bits[1]=32"], row["mlp_ratio[1]=1.0"]) == (1, 1, 1)
    # block 2 does not run at depth 2: all its columns are zero, whatever its entries say
    assert all(value == 0 for name, value in row.items() if "[2]=" in name)
    assert space.active_genes(arch).tolist() == [True, True, True, True, True, False, True, True, False, True,
                                                 True, False]
    changed = {**arch, "num_heads": [1, 2, 2], "mlp_ratio": [2.0, 1.0, 2.0], "bits": [8, 32, 32]}
    np.testing.assert_array_equal(space.features(changed), space.features(arch))
    assert row["macs"] == space.macs(arch) and row["params"] == space.params(arch)
    assert row["model_size_bytes"] == space.model_size_bytes(arch)
    assert not any(name.startswith("bits") for name in tiny_space((32,)).feature_names())  # one choice: no column


def test_one_hot_of_ofa_mobilenetv3_is_the_input_of_ofas_accuracy_predictor():
    from search.benchmarks import OFAAccuracyPredictor, ofa_w12_space

    space = ofa_w12_space()
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(50)] + [space.smallest(), space.largest()]
    X = np.stack([space.one_hot(a) for a in archs])
    names = space.feature_names()
    kernel = [names.index(f"ks[{j}]={k}") for j in range(20) for k in (3, 5, 7)]
    expand = [names.index(f"expand[{j}]={e}") for j in range(20) for e in (3, 4, 6)]
    np.testing.assert_array_equal(X[:, kernel + expand], OFAAccuracyPredictor.encode(archs)[:, :120])


@pytest.mark.parametrize("model", ["resnet", "mobilenetv3", "vit"])
def test_one_hot_counts_one_column_per_running_entry_in_every_family(model):
    from conftest import ROOT

    from supernet import space_from_config

    space = space_from_config(yaml.safe_load((ROOT / "conf" / "model" / f"{model}.yaml").read_text()),
                              num_classes=10)
    rng = np.random.default_rng(1)
    for _ in range(20):
        arch = space.sample(rng)
        active = space.active_genes(arch)
        counted = [i for i, d in enumerate(g for d in space.dims for g in [d] * d.num_genes) if len(d.choices) > 1]
        assert space.one_hot(arch).sum() == active[counted].sum()
        # an entry that does not run: any other choice leaves the subnet, and its features, unchanged
        genes = space.encode(arch)
        for gene in np.flatnonzero(~active)[:3]:
            other = genes.copy()
            other[gene] = (other[gene] + 1) % (space.gene_upper_bounds()[gene] + 1)
            assert space.key(space.decode(other)) == space.key(arch)
            np.testing.assert_array_equal(space.features(space.decode(other)), space.features(arch))
