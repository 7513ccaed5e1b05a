import numpy as np
import pytest

from ldm_jax.diffusion.schedule import make_beta_schedule, make_schedule


@pytest.mark.parametrize(
  'start,end,idx,expected',
  [
    (0.0015, 0.0195, 0, 0.9985),
    (0.0015, 0.0195, 499, 0.115844),
    (0.0015, 0.0195, 999, 1.42304e-4),
    (0.0015, 0.0155, 999, 6.687e-4),
    (0.0015, 0.0205, 999, 9.691e-5),
    (0.00085, 0.012, 499, 0.277670),
    (0.00085, 0.012, 999, 4.66010e-3),
    (0.0015, 0.015, 999, 8.125e-4),
    (1e-4, 2e-2, 999, 7.334e-4),
  ],
)
def test_linear_schedule_matches_reference_values(start, end, idx, expected):
  """The reference's alphas_cumprod of the 'linear' (sqrt-linear) schedule, T = 1000."""
  s = make_schedule('linear', 1000, start, end)
  assert float(s.alphas_cumprod[idx]) == pytest.approx(expected, rel=2e-4)


def test_schedule_names_mean_what_the_reference_means():
  lin = make_beta_schedule('linear', 10, 1e-4, 1e-2)
  np.testing.assert_allclose(np.sqrt(lin), np.linspace(1e-2, 1e-1, 10))
  np.testing.assert_allclose(
    make_beta_schedule('sqrt_linear', 10, 1e-4, 1e-2), np.linspace(1e-4, 1e-2, 10)
  )
  np.testing.assert_allclose(
    make_beta_schedule('sqrt', 10, 1e-4, 1e-2) ** 2, np.linspace(1e-4, 1e-2, 10)
  )
  cos = make_beta_schedule('cosine', 1000)
  assert cos.max() <= 0.999 and cos.min() >= 0 and cos[-1] == pytest.approx(0.999)
  with pytest.raises(ValueError, match='unknown beta_schedule'):
    make_beta_schedule('quadratic', 10)


def test_buffers_follow_the_reference_formulas():
  s = make_schedule('linear', 1000, 0.0015, 0.0195)
  b, a = np.float64(s.betas), np.float64(s.alphas_cumprod)
  a_prev = np.append(1.0, a[:-1])
  np.testing.assert_allclose(s.alphas_cumprod_prev, a_prev, rtol=1e-6)
  np.testing.assert_allclose(s.posterior_variance, b * (1 - a_prev) / (1 - a), rtol=1e-5)
  assert float(s.posterior_variance[0]) == 0.0
  # Entry 0 is log(1e-20), not replaced by entry 1 (improved-diffusion does that; LDM does not).
  assert float(s.posterior_log_variance_clipped[0]) == pytest.approx(np.log(1e-20), rel=1e-6)
  np.testing.assert_allclose(s.posterior_mean_coef1, b * np.sqrt(a_prev) / (1 - a), rtol=1e-5)
  np.testing.assert_allclose(s.sqrt_recipm1_alphas_cumprod, np.sqrt(1 / a - 1), rtol=1e-5)
  assert float(s.lvlb_weights[0]) == float(s.lvlb_weights[1]) == pytest.approx(0.5034, abs=1e-4)
