"""`SampleRadius`: the per-sample radii of dataset certification name each value honestly."""

import numpy as np

from unicr_pl.noises import create_noise
from unicr_pl.radius import certified_radii
from unicr_pl.radius.lookup import SampleRadius


def test_multiclass_family_column_is_the_engine_family_value():
    # Multi-class non-Gaussian radii come from the engine per sample; the family column must
    # carry the engine's family minimum, not the proven bound under the family's name.
    noise = create_noise("laplace", sigma=1.0)
    p_a, p_b = np.array([0.9, 0.3]), np.array([0.05, 0.6])  # the second one abstains
    look = SampleRadius(noise, 16, [1, 2, "inf"], multiclass=True)
    proven, family = look.both(p_a, p_b)
    want = {r.norm: r for r in certified_radii(noise, 0.9, 0.05, norms=(1, 2, "inf"), dim=16)}
    for p, r in want.items():
        assert family[p][0] == r.radius_family
        assert proven[p][0] == min(r.radius, r.radius_family)
        assert family[p][1] == 0.0 and proven[p][1] == 0.0
    # Laplace l2 is not proven tight: the two numbers must differ there.
    assert proven[2.0][0] < family[2.0][0]
