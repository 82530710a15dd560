// Native CPU kernels of TorchForceField (bgflow_sci.energies.forcefield.native): energies and analytic gradients of
// the standard OpenMM terms, fused per interaction, vectorised over the batch.
//
// Layout (as in the torch path): positions and gradients are (3, n_atoms, nb) arrays, the batch innermost, so the
// innermost loop of every kernel runs over nb contiguous configurations and is vectorised by the compiler.  Every
// kernel *adds* its energy (nb,) in kJ/mol and its gradient dE/dx (3, n_atoms, nb) in kJ/mol/nm to the output
// arrays.  Parameters arrive as float64 and are converted to the evaluation type once per interaction.  The formulas
// are those of the torch modules (bonded.py, nonbonded.py, gbsa.py), whose docstrings hold the math; the tests check
// both paths against each other and against OpenMM.
//
// Compiled once per machine by native.py (g++ -O3 -march=native -ffast-math, linked without fast-math so the
// process's floating-point state is untouched) and loaded with ctypes; C ABI entry points at the end.

#include <cmath>
#include <cstdint>

namespace {

template <typename T>
struct Rows {  // pointers to the x, y, z rows of atom a in a (3, n_atoms, nb) array
  T *x, *y, *z;
  Rows(T *base, int64_t n_atoms, int64_t nb, int64_t a)
      : x(base + a * nb), y(base + (n_atoms + a) * nb), z(base + (2 * n_atoms + a) * nb) {}
};

template <typename T>
void bonds(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m, const int64_t *idx,
           const double *par) {
  // E = 1/2 k (r - r0)^2; par = (r0, k) per bond
  for (int64_t t = 0; t < m; ++t) {
    const int64_t i = idx[2 * t], j = idx[2 * t + 1];
    const T r0 = T(par[2 * t]), k = T(par[2 * t + 1]);
    Rows<const T> pi(pos, n_atoms, nb, i), pj(pos, n_atoms, nb, j);
    Rows<T> gi(grad, n_atoms, nb, i), gj(grad, n_atoms, nb, j);
#pragma GCC ivdep
    for (int64_t b = 0; b < nb; ++b) {
      const T dx = pi.x[b] - pj.x[b], dy = pi.y[b] - pj.y[b], dz = pi.z[b] - pj.z[b];
      const T r = std::sqrt(dx * dx + dy * dy + dz * dz);
      const T dr = r - r0;
      energy[b] += T(0.5) * k * dr * dr;
      const T s = k * dr / r;
      gi.x[b] += s * dx, gi.y[b] += s * dy, gi.z[b] += s * dz;
      gj.x[b] -= s * dx, gj.y[b] -= s * dy, gj.z[b] -= s * dz;
    }
  }
}

template <typename T>
void angles(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m, const int64_t *idx,
            const double *par) {
  // E = 1/2 k (theta - theta0)^2, vertex j; par = (theta0, k)
  for (int64_t t = 0; t < m; ++t) {
    const int64_t i = idx[3 * t], j = idx[3 * t + 1], l = idx[3 * t + 2];
    const T theta0 = T(par[2 * t]), k = T(par[2 * t + 1]);
    Rows<const T> pi(pos, n_atoms, nb, i), pj(pos, n_atoms, nb, j), pl(pos, n_atoms, nb, l);
    Rows<T> gi(grad, n_atoms, nb, i), gj(grad, n_atoms, nb, j), gl(grad, n_atoms, nb, l);
#pragma GCC ivdep
    for (int64_t b = 0; b < nb; ++b) {
      const T ax = pi.x[b] - pj.x[b], ay = pi.y[b] - pj.y[b], az = pi.z[b] - pj.z[b];
      const T bx = pl.x[b] - pj.x[b], by = pl.y[b] - pj.y[b], bz = pl.z[b] - pj.z[b];
      const T c = ax * bx + ay * by + az * bz;
      const T px = ay * bz - az * by, py = az * bx - ax * bz, pz = ax * by - ay * bx;
      const T pn = std::sqrt(px * px + py * py + pz * pz);
      const T dtheta = std::atan2(pn, c) - theta0;
      energy[b] += T(0.5) * k * dtheta * dtheta;
      const T s = k * dtheta / pn;
      const T ca = c / (ax * ax + ay * ay + az * az), cb = c / (bx * bx + by * by + bz * bz);
      const T gax = s * (ca * ax - bx), gay = s * (ca * ay - by), gaz = s * (ca * az - bz);
      const T gbx = s * (cb * bx - ax), gby = s * (cb * by - ay), gbz = s * (cb * bz - az);
      gi.x[b] += gax, gi.y[b] += gay, gi.z[b] += gaz;
      gl.x[b] += gbx, gl.y[b] += gby, gl.z[b] += gbz;
      gj.x[b] -= gax + gbx, gj.y[b] -= gay + gby, gj.z[b] -= gaz + gbz;
    }
  }
}

template <typename T, int N>
void torsion(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, const int64_t *idx, double per_,
             double phase_, double k_) {
  // one torsion E = k (1 + cos(n phi - phase)); b1 = xj - xi, b2 = xk - xj, b3 = xl - xk.  N > 0: cos(n phi) and
  // sin(n phi) from (cos phi + i sin phi)^N, no transcendental function; N = 0: any periodicity, via atan2.
  const int64_t i = idx[0], j = idx[1], k_idx = idx[2], l = idx[3];
  const T per = T(per_), k = T(k_), cph = T(std::cos(phase_)), sph = T(std::sin(phase_)), phase = T(phase_);
  Rows<const T> pi(pos, n_atoms, nb, i), pj(pos, n_atoms, nb, j), pk(pos, n_atoms, nb, k_idx), pl(pos, n_atoms, nb, l);
  Rows<T> gi(grad, n_atoms, nb, i), gj(grad, n_atoms, nb, j), gk(grad, n_atoms, nb, k_idx), gl(grad, n_atoms, nb, l);
#pragma GCC ivdep
  for (int64_t b = 0; b < nb; ++b) {
    const T b1x = pj.x[b] - pi.x[b], b1y = pj.y[b] - pi.y[b], b1z = pj.z[b] - pi.z[b];
    const T b2x = pk.x[b] - pj.x[b], b2y = pk.y[b] - pj.y[b], b2z = pk.z[b] - pj.z[b];
    const T b3x = pl.x[b] - pk.x[b], b3y = pl.y[b] - pk.y[b], b3z = pl.z[b] - pk.z[b];
    const T n1x = b1y * b2z - b1z * b2y, n1y = b1z * b2x - b1x * b2z, n1z = b1x * b2y - b1y * b2x;
    const T n2x = b2y * b3z - b2z * b3y, n2y = b2z * b3x - b2x * b3z, n2z = b2x * b3y - b2y * b3x;
    const T b2n = std::sqrt(b2x * b2x + b2y * b2y + b2z * b2z);
    const T y = b2n * (b1x * n2x + b1y * n2y + b1z * n2z), x = n1x * n2x + n1y * n2y + n1z * n2z;
    T cos_arg, sin_arg;  // cos and sin of n phi - phase
    if constexpr (N > 0) {
      const T inv = T(1) / std::sqrt(x * x + y * y), c1 = x * inv, s1 = y * inv;
      T c = c1, s = s1;
      for (int p = 1; p < N; ++p) {
        const T c_next = c * c1 - s * s1;
        s = s * c1 + c * s1;
        c = c_next;
      }
      cos_arg = c * cph + s * sph;
      sin_arg = s * cph - c * sph;
    } else {
      const T arg = per * std::atan2(y, x) - phase;
      cos_arg = std::cos(arg);
      sin_arg = std::sin(arg);
    }
    energy[b] += k * (T(1) + cos_arg);
    const T de = -k * per * sin_arg;
    const T n1sq = n1x * n1x + n1y * n1y + n1z * n1z, n2sq = n2x * n2x + n2y * n2y + n2z * n2z;
    const T s1 = de * b2n / n1sq, s3 = de * b2n / n2sq;
    const T s21 = -de / (b2n * n1sq) * (b1x * b2x + b1y * b2y + b1z * b2z);
    const T s23 = -de / (b2n * n2sq) * (b3x * b2x + b3y * b2y + b3z * b2z);
    const T g1x = s1 * n1x, g1y = s1 * n1y, g1z = s1 * n1z;  // dE/db1
    const T g3x = s3 * n2x, g3y = s3 * n2y, g3z = s3 * n2z;  // dE/db3
    const T g2x = s21 * n1x + s23 * n2x, g2y = s21 * n1y + s23 * n2y, g2z = s21 * n1z + s23 * n2z;  // dE/db2
    gi.x[b] -= g1x, gi.y[b] -= g1y, gi.z[b] -= g1z;
    gj.x[b] += g1x - g2x, gj.y[b] += g1y - g2y, gj.z[b] += g1z - g2z;
    gk.x[b] += g2x - g3x, gk.y[b] += g2y - g3y, gk.z[b] += g2z - g3z;
    gl.x[b] += g3x, gl.y[b] += g3y, gl.z[b] += g3z;
  }
}

template <typename T>
void torsions(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m, const int64_t *idx,
              const double *par) {
  // par = (periodicity, phase, k) per torsion; integer periodicities 1..6 take the transcendental-free loop
  for (int64_t t = 0; t < m; ++t) {
    const double per = par[3 * t], phase = par[3 * t + 1], k = par[3 * t + 2];
    const int64_t *ix = idx + 4 * t;
    switch (per == double(int(per)) ? int(per) : 0) {
      case 1: torsion<T, 1>(pos, grad, energy, n_atoms, nb, ix, per, phase, k); break;
      case 2: torsion<T, 2>(pos, grad, energy, n_atoms, nb, ix, per, phase, k); break;
      case 3: torsion<T, 3>(pos, grad, energy, n_atoms, nb, ix, per, phase, k); break;
      case 4: torsion<T, 4>(pos, grad, energy, n_atoms, nb, ix, per, phase, k); break;
      case 5: torsion<T, 5>(pos, grad, energy, n_atoms, nb, ix, per, phase, k); break;
      case 6: torsion<T, 6>(pos, grad, energy, n_atoms, nb, ix, per, phase, k); break;
      default: torsion<T, 0>(pos, grad, energy, n_atoms, nb, ix, per, phase, k);
    }
  }
}

template <typename T>
void pairs(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m, const int64_t *idx,
           const double *par, double cutoff, double k_rf, double c_rf, double switch_distance) {
  // Coulomb + LJ over a pair list; par = (qq, A = 4 eps sigma^12, B = 4 eps sigma^6).  cutoff <= 0: plain 1/r, no
  // cutoff; else reaction field and pairs beyond the cutoff dropped; switch_distance > 0: LJ switching.
  const bool has_cutoff = cutoff > 0, has_switch = cutoff > 0 && switch_distance > 0;
  const T rc2 = T(cutoff * cutoff), krf = T(k_rf), crf = T(c_rf), rsw = T(switch_distance);
  const T inv_width = has_switch ? T(1.0 / (cutoff - switch_distance)) : T(0);
  for (int64_t t = 0; t < m; ++t) {
    const int64_t i = idx[2 * t], j = idx[2 * t + 1];
    const T qq = T(par[3 * t]), a = T(par[3 * t + 1]), c6 = T(par[3 * t + 2]);
    Rows<const T> pi(pos, n_atoms, nb, i), pj(pos, n_atoms, nb, j);
    Rows<T> gi(grad, n_atoms, nb, i), gj(grad, n_atoms, nb, j);
    if (!has_cutoff) {
#pragma GCC ivdep
      for (int64_t b = 0; b < nb; ++b) {
        const T dx = pi.x[b] - pj.x[b], dy = pi.y[b] - pj.y[b], dz = pi.z[b] - pj.z[b];
        const T inv_r2 = T(1) / (dx * dx + dy * dy + dz * dz);
        const T inv_r = std::sqrt(inv_r2);
        const T inv_r6 = inv_r2 * inv_r2 * inv_r2;
        energy[b] += qq * inv_r + (a * inv_r6 - c6) * inv_r6;
        const T p = (T(6) * c6 - T(12) * a * inv_r6) * inv_r6 * inv_r2 - qq * inv_r * inv_r2;
        gi.x[b] += p * dx, gi.y[b] += p * dy, gi.z[b] += p * dz;
        gj.x[b] -= p * dx, gj.y[b] -= p * dy, gj.z[b] -= p * dz;
      }
    } else {
#pragma GCC ivdep
      for (int64_t b = 0; b < nb; ++b) {
        const T dx = pi.x[b] - pj.x[b], dy = pi.y[b] - pj.y[b], dz = pi.z[b] - pj.z[b];
        const T r2 = dx * dx + dy * dy + dz * dz;
        const T inv_r2 = T(1) / r2;
        const T inv_r = std::sqrt(inv_r2);
        const T inv_r6 = inv_r2 * inv_r2 * inv_r2;
        T e_lj = (a * inv_r6 - c6) * inv_r6;
        T p_lj = (T(6) * c6 - T(12) * a * inv_r6) * inv_r6 * inv_r2;
        if (has_switch) {
          const T r = r2 * inv_r;
          T u = (r - rsw) * inv_width;
          u = u > T(0) ? u : T(0);
          const T s = T(1) + u * u * u * (T(-10) + u * (T(15) - T(6) * u));
          const T ds = u * u * (T(-30) + u * (T(60) - T(30) * u)) * inv_width;
          p_lj = p_lj * s + e_lj * ds * inv_r;
          e_lj = e_lj * s;
        }
        const bool inside = r2 < rc2;
        const T e = qq * (inv_r + krf * r2 - crf) + e_lj;
        const T p = inside ? qq * (T(2) * krf - inv_r * inv_r2) + p_lj : T(0);
        energy[b] += inside ? e : T(0);
        gi.x[b] += p * dx, gi.y[b] += p * dy, gi.z[b] += p * dz;
        gj.x[b] -= p * dx, gj.y[b] -= p * dy, gj.z[b] -= p * dz;
      }
    }
  }
}

template <typename T>
inline void descreening(T r, T inv_r, T rho_i, T s_j, bool in_cutoff, T &t, T &dt) {
  // HCT/OBC descreening integral T_ij(r) of atom j (scaled radius s_j) seen from atom i (offset radius rho_i) and
  // dT_ij/dr; both zero when the spheres do not overlap (rho_i >= r + s_j) or the pair is beyond the cutoff
  const T upper = T(1) / (r + s_j);
  const T diff = std::fabs(r - s_j);
  const T lower = T(1) / (rho_i > diff ? rho_i : diff);
  const T l2 = lower * lower, u2 = upper * upper, s2 = s_j * s_j;
  const T log_ratio = std::log(upper / lower);
  T tij = lower - upper + T(0.25) * r * (u2 - l2) + T(0.5) * inv_r * log_ratio + T(0.25) * s2 * inv_r * (l2 - u2);
  tij += rho_i < s_j - r ? T(2) * (T(1) / rho_i - lower) : T(0);
  const T dtij = -(T(0.25) * (T(1) + s2 * inv_r * inv_r) * (l2 - u2) + T(0.5) * log_ratio * inv_r * inv_r);
  const bool active = (rho_i < r + s_j) && in_cutoff;
  t = active ? tij : T(0);
  dt = active ? dtij : T(0);
}

template <typename T>
void obc2(const T *pos, T *grad, T *energy, int64_t n, int64_t nb, const double *qq, const double *rho,
          const double *s, const double *radius, const double *sa, double cutoff, T *work) {
  // OBC2 generalised Born + ACE surface term over all atoms (gbsa.py).  qq: (n, n) prefactor q_i q_j; rho: offset
  // radii; s: scaled offset radii; sa: ACE prefactors 4 pi gamma (R + 0.14)^2.  work: (4 n + n^2) nb scratch values
  // (psi, B, dB/dpsi, dE/dB per atom; dT_ij/dr per ordered pair).
  const T alpha = T(1.0), beta = T(0.8), gamma = T(4.85);
  const bool has_cutoff = cutoff > 0;
  const T rc2 = T(cutoff * cutoff), inv_rc = has_cutoff ? T(1.0 / cutoff) : T(0);
  T *psi = work, *born = work + n * nb, *dborn = work + 2 * n * nb, *deb = work + 3 * n * nb;
  T *dtw = work + 4 * n * nb;
  for (int64_t q = 0; q < 4 * n * nb; ++q) work[q] = T(0);
  // Born radii: psi_i = 1/2 rho_i sum_j T_ij; both orders of a pair share its distance
  for (int64_t i = 0; i < n; ++i) {
    const T rho_i = T(rho[i]), s_i = T(s[i]);
    Rows<const T> pi(pos, n, nb, i);
    T *psi_i = psi + i * nb;
    for (int64_t j = i + 1; j < n; ++j) {
      const T rho_j = T(rho[j]), s_j = T(s[j]);
      Rows<const T> pj(pos, n, nb, j);
      T *psi_j = psi + j * nb, *dt_ij = dtw + (i * n + j) * nb, *dt_ji = dtw + (j * n + i) * nb;
#pragma GCC ivdep
      for (int64_t b = 0; b < nb; ++b) {
        const T dx = pi.x[b] - pj.x[b], dy = pi.y[b] - pj.y[b], dz = pi.z[b] - pj.z[b];
        const T r2 = dx * dx + dy * dy + dz * dz;
        const T inv_r = T(1) / std::sqrt(r2), r = r2 * inv_r;
        const bool in_cutoff = !has_cutoff || r2 < rc2;
        T t, dt;
        descreening(r, inv_r, rho_i, s_j, in_cutoff, t, dt);
        psi_i[b] += t;
        dt_ij[b] = dt;
        descreening(r, inv_r, rho_j, s_i, in_cutoff, t, dt);
        psi_j[b] += t;
        dt_ji[b] = dt;
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const T rho_i = T(rho[i]), r_i = T(radius[i]), sa_i = T(sa[i]), qq_ii = T(qq[i * n + i]);
    T *psi_i = psi + i * nb, *born_i = born + i * nb, *dborn_i = dborn + i * nb, *deb_i = deb + i * nb;
#pragma GCC ivdep
    for (int64_t b = 0; b < nb; ++b) {
      const T p = T(0.5) * rho_i * psi_i[b];
      const T th = std::tanh(p * (alpha + p * (-beta + gamma * p)));
      const T bi = T(1) / (T(1) / rho_i - th / r_i);
      born_i[b] = bi;
      dborn_i[b] = bi * bi * (T(1) - th * th) * (alpha + p * (T(-2) * beta + T(3) * gamma * p)) / r_i;
      // self energy 1/2 qq_ii / B_i and its d/dB_i; ACE term sa_i (R_i / B_i)^6
      const T ratio = r_i / bi, r3 = ratio * ratio * ratio, e_sa = sa_i * r3 * r3;
      energy[b] += T(0.5) * qq_ii / bi + e_sa;
      deb_i[b] += T(-0.5) * qq_ii / (bi * bi) - T(6) * e_sa / bi;
    }
  }
  // pair energies q_i q_j / f_ij (i < j) and dE/dB through B_i B_j
  for (int64_t i = 0; i < n; ++i) {
    Rows<const T> pi(pos, n, nb, i);
    Rows<T> gi(grad, n, nb, i);
    const T *born_i = born + i * nb;
    T *deb_i = deb + i * nb;
    for (int64_t j = i + 1; j < n; ++j) {
      const T qij = T(qq[i * n + j]);
      Rows<const T> pj(pos, n, nb, j);
      Rows<T> gj(grad, n, nb, j);
      const T *born_j = born + j * nb;
      T *deb_j = deb + j * nb;
#pragma GCC ivdep
      for (int64_t b = 0; b < nb; ++b) {
        const T dx = pi.x[b] - pj.x[b], dy = pi.y[b] - pj.y[b], dz = pi.z[b] - pj.z[b];
        const T r2 = dx * dx + dy * dy + dz * dz;
        const T bb = born_i[b] * born_j[b];
        const T d = r2 / (T(4) * bb);
        const T ex = std::exp(-d);
        const T inv_f2 = T(1) / (r2 + bb * ex);
        const T inv_f = std::sqrt(inv_f2), inv_f3 = inv_f * inv_f2;
        const bool inside = !has_cutoff || r2 < rc2;
        energy[b] += inside ? qij * (inv_f - inv_rc) : T(0);
        const T p = inside ? -qij * (T(1) - T(0.25) * ex) * inv_f3 : T(0);
        const T mm = inside ? T(-0.5) * qij * ex * (T(1) + d) * inv_f3 : T(0);
        deb_i[b] += mm * born_j[b];
        deb_j[b] += mm * born_i[b];
        gi.x[b] += p * dx, gi.y[b] += p * dy, gi.z[b] += p * dz;
        gj.x[b] -= p * dx, gj.y[b] -= p * dy, gj.z[b] -= p * dz;
      }
    }
  }
  // chain rule through the Born radii: c_i = 1/2 rho_i dE/dB_i dB_i/dpsi_i; pair (i, j) gets
  // (c_i dT_ij/dr + c_j dT_ji/dr) / r times x_i - x_j
  for (int64_t i = 0; i < n; ++i) {
    const T rho_i = T(rho[i]);
    T *c_i = deb + i * nb;
    const T *dborn_i = dborn + i * nb;
#pragma GCC ivdep
    for (int64_t b = 0; b < nb; ++b) c_i[b] = T(0.5) * rho_i * c_i[b] * dborn_i[b];
  }
  for (int64_t i = 0; i < n; ++i) {
    Rows<const T> pi(pos, n, nb, i);
    Rows<T> gi(grad, n, nb, i);
    const T *c_i = deb + i * nb;
    for (int64_t j = i + 1; j < n; ++j) {
      Rows<const T> pj(pos, n, nb, j);
      Rows<T> gj(grad, n, nb, j);
      const T *c_j = deb + j * nb, *dt_ij = dtw + (i * n + j) * nb, *dt_ji = dtw + (j * n + i) * nb;
#pragma GCC ivdep
      for (int64_t b = 0; b < nb; ++b) {
        const T dx = pi.x[b] - pj.x[b], dy = pi.y[b] - pj.y[b], dz = pi.z[b] - pj.z[b];
        const T inv_r = T(1) / std::sqrt(dx * dx + dy * dy + dz * dz);
        const T p = (c_i[b] * dt_ij[b] + c_j[b] * dt_ji[b]) * inv_r;
        gi.x[b] += p * dx, gi.y[b] += p * dy, gi.z[b] += p * dz;
        gj.x[b] -= p * dx, gj.y[b] -= p * dy, gj.z[b] -= p * dz;
      }
    }
  }
}

}  // namespace

#define BGF_ENTRY(T, S)                                                                                             \
  extern "C" void bgf_bonds_##S(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m,           \
                                const int64_t *idx, const double *par) {                                            \
    bonds<T>(pos, grad, energy, n_atoms, nb, m, idx, par);                                                           \
  }                                                                                                                  \
  extern "C" void bgf_angles_##S(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m,          \
                                 const int64_t *idx, const double *par) {                                           \
    angles<T>(pos, grad, energy, n_atoms, nb, m, idx, par);                                                          \
  }                                                                                                                  \
  extern "C" void bgf_torsions_##S(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m,        \
                                   const int64_t *idx, const double *par) {                                         \
    torsions<T>(pos, grad, energy, n_atoms, nb, m, idx, par);                                                        \
  }                                                                                                                  \
  extern "C" void bgf_pairs_##S(const T *pos, T *grad, T *energy, int64_t n_atoms, int64_t nb, int64_t m,           \
                                const int64_t *idx, const double *par, double cutoff, double k_rf, double c_rf,     \
                                double switch_distance) {                                                           \
    pairs<T>(pos, grad, energy, n_atoms, nb, m, idx, par, cutoff, k_rf, c_rf, switch_distance);                      \
  }                                                                                                                  \
  extern "C" void bgf_obc2_##S(const T *pos, T *grad, T *energy, int64_t n, int64_t nb, const double *qq,           \
                               const double *rho, const double *s, const double *radius, const double *sa,          \
                               double cutoff, T *work) {                                                            \
    obc2<T>(pos, grad, energy, n, nb, qq, rho, s, radius, sa, cutoff, work);                                         \
  }

BGF_ENTRY(float, f32)
BGF_ENTRY(double, f64)

extern "C" int bgf_abi_version() { return 1; }
