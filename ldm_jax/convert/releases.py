"""The released CompVis checkpoints by name: where each is published, which config converts it,
and a resumable, verified download (``python -m ldm_jax.convert compvis --name cin256_v2 --out DIR``).

The table is the CompVis README's (and ``scripts/download_*.sh``'s) links as data. Links of this
kind have died before (CompVis/latent-diffusion issues #14, #204, #214): ``LDM_JAX_RELEASE_MIRROR``
(or ``--mirror``) replaces each URL's scheme and host by a mirror's (``https://my.mirror/x`` turns
``https://ommer-lab.com/files/latent-diffusion/kl-f8.zip`` into
``https://my.mirror/x/files/latent-diffusion/kl-f8.zip``), and ``--ckpt`` converts a file fetched
by other means. sha256 digests are listed where known; a download without one is reported with
the digest it got, to be compared with the source's or pinned (``--sha256``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from ldm_jax import storage
from ldm_jax.errors import UserError

log = logging.getLogger(__name__)

MIRROR_ENV = 'LDM_JAX_RELEASE_MIRROR'
CACHE_ENV = storage.CACHE_ENV
_OMMER = 'https://ommer-lab.com/files/latent-diffusion/'
_HEIBOX = 'https://heibox.uni-heidelberg.de/f/'


@dataclasses.dataclass(frozen=True)
class Release:
  name: str  # the config's name: configs/released/<name>.py
  url: str  # a .zip holding one .ckpt, or the .ckpt itself
  sha256: str = ''  # of the downloaded file, where known
  note: str = ''

  @property
  def config(self) -> str:
    return f'configs/released/{self.name}.py'

  @property
  def is_zip(self) -> bool:
    return self.url.endswith('.zip') or 'heibox' in self.url


RELEASES = {
  r.name: r
  for r in (
    *(
      Release(n, f'{_OMMER}{n.replace("_", "-")}.zip')
      for n in ('kl_f4', 'kl_f8', 'kl_f16', 'kl_f32', 'vq_f4', 'vq_f8', 'vq_f8_n256')
    ),
    Release('vq_f4_noattn', f'{_HEIBOX}9c6681f64bb94338a069/?dl=1'),
    Release('vq_f16', f'{_HEIBOX}0e42b04e2e904890a9b6/?dl=1'),
    Release('celeba256', f'{_OMMER}celeba.zip'),
    Release('ffhq256', f'{_OMMER}ffhq.zip'),
    Release('lsun_churches256', f'{_OMMER}lsun_churches.zip'),
    Release('lsun_beds256', f'{_OMMER}lsun_bedrooms.zip'),
    Release('cin256', f'{_OMMER}cin.zip'),
    Release('cin256_v2', f'{_OMMER}nitro/cin/model.ckpt'),
    Release('text2img256', f'{_OMMER}text2img.zip'),
    Release('txt2img_1p4b', f'{_OMMER}nitro/txt2img-f8-large/model.ckpt'),
    Release('bsr_sr', f'{_OMMER}sr_bsr.zip'),
    Release('inpainting_big', f'{_HEIBOX}4d9ac7ea40c64582b7c9/?dl=1'),
    Release('layout2img_openimages256', f'{_OMMER}layout2img_model.zip'),
    Release('semantic_synthesis256', f'{_OMMER}semantic_synthesis256.zip'),
    Release('semantic_synthesis512', f'{_OMMER}semantic_synthesis.zip'),
    Release(
      'rdm_768',
      'https://ommer-lab.com/files/rdm/model.ckpt',
      note='prompts also need CLIP ViT-L/14 text weights: python -m ldm_jax.convert clip, '
      'then --config.cond_stage.clip_text (configs/released/rdm_768.py)',
    ),
  )
}


def get(name: str) -> Release:
  if name not in RELEASES:
    raise UserError(
      f'--name={name!r} is not a released CompVis model; known: {", ".join(sorted(RELEASES))}'
    )
  return RELEASES[name]


def mirrored(url: str, mirror: str = '') -> str:
  """``url`` with its scheme and host replaced by ``mirror`` (default: $LDM_JAX_RELEASE_MIRROR)."""
  mirror = mirror or os.environ.get(MIRROR_ENV, '')
  if not mirror:
    return url
  parts = urllib.parse.urlsplit(url)
  rest = urllib.parse.urlunsplit(('', '', parts.path, parts.query, ''))
  return mirror.rstrip('/') + rest


cache_dir = storage.cache_dir


def sha256_of(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def download(url: str, dest: str, sha256: str = '', retries: int = 3) -> str:
  """``url`` to ``dest`` through ``dest + '.part'``, resumed with an HTTP Range request where a
  partial file exists (a dropped connection, a killed job); the digest is checked when given
  and a mismatch removes the file. Returns the sha256 of the file."""
  if os.path.exists(dest):
    digest = sha256_of(dest)
    if not sha256 or digest == sha256:
      return digest
    os.remove(dest)  # a stale or corrupt earlier download
  os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
  part = dest + '.part'
  for attempt in range(retries + 1):
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={'Range': f'bytes={have}-'} if have else {})
    try:
      with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:  # the server ignored the Range: start over
          have = 0
        total = have + int(response.headers.get('Content-Length') or 0)
        log.info('downloading %s (%s from byte %d)', url, _size(total), have)
        with open(part, 'ab' if have else 'wb') as f:
          last = time.time()
          while block := response.read(1 << 20):
            f.write(block)
            if time.time() - last > 10:
              last = time.time()
              log.info('  %s of %s', _size(f.tell()), _size(total))
          got = f.tell()
      if not total or got >= total:
        break
      raise http.client.IncompleteRead(b'', total - got)  # the server closed early: resume
    except urllib.error.HTTPError as e:
      if e.code == 416:  # the requested range starts at the end: the file is complete
        break
      raise UserError(f'downloading {url}: HTTP {e.code} {e.reason}. {_dead_link_hint()}') from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
      if attempt == retries:
        raise UserError(
          f'downloading {url} failed after {retries + 1} tries ({e}); run the command again to '
          f'resume from {os.path.getsize(part) if os.path.exists(part) else 0} bytes. '
          f'{_dead_link_hint()}'
        ) from e
      log.warning('download interrupted (%s); resuming', e)
  digest = sha256_of(part)
  if sha256 and digest != sha256:
    os.remove(part)
    raise UserError(
      f'{url}: sha256 {digest} differs from the expected {sha256}: the file was removed; '
      'download it again (or the source changed: check its digest)'
    )
  os.replace(part, dest)
  return digest


def fetch(release: Release, mirror: str = '', sha256: str = '', cache: str = '') -> tuple[str, str]:
  """(checkpoint path, sha256 of the downloaded file) of a release, downloaded into the cache
  (``$LDM_JAX_CACHE`` or ~/.cache/ldm_jax) and, for a zip, its one ``.ckpt`` extracted."""
  root = os.path.join(cache or cache_dir(), release.name)
  url = mirrored(release.url, mirror)
  target = os.path.join(root, 'download.zip' if release.is_zip else 'model.ckpt')
  digest = download(url, target, sha256 or release.sha256)
  if not release.is_zip:
    return target, digest
  ckpt = os.path.join(root, 'model.ckpt')
  if not os.path.exists(ckpt):
    try:
      with zipfile.ZipFile(target) as z:
        members = [m for m in z.namelist() if m.endswith(('.ckpt', '.pth', '.pt'))]
        if len(members) != 1:
          raise UserError(
            f'{url}: expected one checkpoint in the archive, found {members or z.namelist()}'
          )
        with z.open(members[0]) as src, open(ckpt + '.part', 'wb') as dst:
          while block := src.read(1 << 22):
            dst.write(block)
    except zipfile.BadZipFile as e:
      os.remove(target)
      raise UserError(f'{url}: not a zip archive ({e}); removed, run the command again') from e
    os.replace(ckpt + '.part', ckpt)
  return ckpt, digest


def _size(n: int) -> str:
  return f'{n / 2**20:.1f} MiB' if n else 'unknown size'


def _dead_link_hint() -> str:
  return (
    f'If the link is dead, set {MIRROR_ENV} (or --mirror) to a mirror, or download the file '
    'yourself and pass --ckpt with --config.'
  )
