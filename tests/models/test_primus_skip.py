"""``PrimusSkip`` and its ``SkipDecoder``: strides per level, shapes, Primus' encoder keys, the image path in use."""
from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.primus import Primus

from nnssl.models.decoders.skip_decoder import SkipDecoder, level_strides
from nnssl.models.primus_skip import PrimusSkip

TINY = {"embed_dim": 96, "eva_depth": 2, "eva_numheads": 4}
PATCH = (16, 32, 48)  # non-cubic on purpose


@pytest.mark.parametrize(("token", "strides"), [
    ((8, 8, 8), [(1, 1, 1), (2, 2, 2), (2, 2, 2)]),
    ((4, 8, 8), [(1, 1, 1), (1, 2, 2), (2, 2, 2)]),
    ((2, 4, 4), [(1, 1, 1), (1, 2, 2)]),
])
def test_level_strides_multiply_to_the_token_with_the_last_upsampling(token: tuple[int, int, int],
                                                                      strides: list[tuple[int, ...]]) -> None:
    assert level_strides(token) == strides
    decoder = SkipDecoder(1, 8, token, 2, skip_channels=(4,) * len(strides))
    up = decoder.up[-1].stride  # token grid -> coarsest image level
    product = [u * s for u, s in zip(up, torch.tensor(strides).prod(dim=0).tolist(), strict=True)]
    assert product == list(token)


def test_level_strides_refuse_non_powers_of_two() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        level_strides((6, 8, 8))
    with pytest.raises(ValueError, match="needs 3 entries"):
        SkipDecoder(1, 8, (8, 8, 8), 2, skip_channels=(4, 8))


@pytest.mark.parametrize("token", [(8, 8, 8), (4, 8, 8)])
def test_output_shape_and_primus_encoder_keys(token: tuple[int, int, int]) -> None:
    network = PrimusSkip(1, 3, PATCH, patch_embed_size=token, **TINY)
    x = torch.randn(2, 1, *PATCH)
    assert network(x).shape == (2, 3, *PATCH)
    primus = Primus(1, TINY["embed_dim"], token, 3, TINY["eva_depth"], TINY["eva_numheads"], input_shape=PATCH)
    encoder_keys = {k: v.shape for k, v in primus.state_dict().items() if k.startswith(("down_projection.", "eva."))}
    ours = {k: v.shape for k, v in network.state_dict().items() if k.startswith(("down_projection.", "eva."))}
    assert ours == encoder_keys  # an nnssl ViT encoder loads 1:1 into either network
    assert not any(k.startswith("up_projection.") for k in network.state_dict())


def test_full_resolution_detail_reaches_the_output() -> None:
    """One voxel changed inside a token changes the output most next to that voxel: the image path carries it, which
    a token-only decoder cannot (it sees the voxel only through the token's embedding)."""
    torch.manual_seed(0)
    network = PrimusSkip(1, 2, PATCH, patch_embed_size=(8, 8, 8), **TINY).eval()
    x = torch.randn(1, 1, *PATCH)
    bumped = x.clone()
    bumped[0, 0, 5, 13, 21] += 5.0
    with torch.no_grad():
        change = (network(bumped) - network(x)).abs().sum(dim=1)[0]  # (D, H, W)
    peak = (change == change.max()).nonzero()[0]
    assert (peak - torch.tensor([5, 13, 21])).abs().max() <= 1  # within the 3x3x3 convolutions' reach
