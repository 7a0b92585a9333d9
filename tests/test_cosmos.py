"""The Cosmos-Tokenizer CV adapter, with small TorchScript modules the test scripts and saves."""
import pytest
import torch
import torch.nn.functional as F

from adaptok_cli import CompressOptions, compress, decompress
from adaptok_cli.models import calibration
from adaptok_cli.errors import ModelUnavailableError
from adaptok_cli.models.tokenizer import CosmosTokenizer, load_tokenizer
from adaptok_cli.running.video import read_frames

from conftest import noise_frames, round_trip, write_video


class Encoder(torch.nn.Module):
    """B,3,T,H,W -> B,16,1+(T-1)/tf,H/8,W/8; refuses what the real CV models refuse."""

    def __init__(self, tf: int):
        super().__init__()
        self.tf = tf
        self.proj = torch.nn.Conv3d(3, 16, 1)

    def forward(self, x):
        t = x.shape[2]
        if (t - 1) % self.tf != 0 or x.shape[3] % 16 != 0 or x.shape[4] % 16 != 0:
            raise RuntimeError("bad input shape")
        first = x[:, :, :1]
        rest = F.avg_pool3d(x[:, :, 1:], (self.tf, 1, 1)) if t > 1 else x[:, :, :0]
        y = F.avg_pool3d(torch.cat([first, rest], 2), (1, 8, 8))
        return (self.proj(y),)


class Decoder(torch.nn.Module):
    def __init__(self, tf: int):
        super().__init__()
        self.tf = tf
        self.proj = torch.nn.Conv3d(16, 3, 1)

    def forward(self, z):
        y = self.proj(z).repeat_interleave(8, 3).repeat_interleave(8, 4)
        return torch.cat([y[:, :, :1], y[:, :, 1:].repeat_interleave(self.tf, 2)], 2).clamp(-1, 1)


@pytest.fixture(params=[4, 8], ids=["CV4x8x8", "CV8x8x8"])
def cosmos_dir(tmp_path, request):
    d = tmp_path / f"Cosmos-Tokenizer-CV{request.param}x8x8"
    d.mkdir()
    torch.manual_seed(0)
    torch.jit.script(Encoder(request.param)).save(str(d / "encoder.jit"))
    torch.jit.script(Decoder(request.param)).save(str(d / "decoder.jit"))
    return d


def test_adapter_probes_factors(cosmos_dir):
    tok = load_tokenizer(str(cosmos_dir))
    assert isinstance(tok, CosmosTokenizer)
    tf = int(cosmos_dir.name.split("CV")[1][0])
    assert (tok.time_factor, tok.space_factor, tok.channels, tok.pad_multiple) == (tf, 8, 16, 16)
    assert tok.frames_for(3, at_start=False) == 1 + 2 * tf   # every chunk is its own clip: 1 + tf*k


def test_round_trip_through_cosmos(tmp_path, cosmos_dir):
    src = write_video(tmp_path / "v.mkv", noise_frames(23, 24, 40))   # neither side a multiple of 16
    dst = tmp_path / "v.atok"
    opts = CompressOptions(tokenizer=str(cosmos_dir), chunk=2, device="cpu")
    tok = load_tokenizer(str(cosmos_dir))
    with pytest.raises(ModelUnavailableError, match="not calibrated"):     # its scale was never measured
        compress(src, dst, opts)
    calibration.save(calibration.calibrate(tok, [src]), calibration.stored_path(tok))
    res = compress(src, dst, opts)
    assert res.frames == 23
    out = tmp_path / "o.mkv"
    decompress(dst, out, tokenizer=str(cosmos_dir), device="cpu")
    frames = read_frames(out)
    assert frames.shape == (23, 24, 40, 3)


def test_round_trip_at_480p(tmp_path, cosmos_dir, video_480p):
    """854x480 (not a multiple of 16 wide) through calibrate, compress and decompress."""
    round_trip(str(cosmos_dir), video_480p, tmp_path, chunk=2)


def test_missing_or_broken_folder(tmp_path):
    with pytest.raises(ModelUnavailableError, match="encoder.jit"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "encoder.jit").write_bytes(b"not torchscript")
    (tmp_path / "decoder.jit").write_bytes(b"not torchscript")
    with pytest.raises(ModelUnavailableError):
        load_tokenizer(str(tmp_path))
