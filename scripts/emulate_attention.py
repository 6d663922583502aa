#!/usr/bin/env python3
"""CPU emulation of Sources/PunicaCUDA/Kernels/attention.cu (no GPU): part 1 checks the lane-level fragment and
ldmatrix address math of mma.m16n8k16 against the PTX fragment layouts; part 2 runs the block-level algorithm (tile loop,
masks, online softmax, key warps, partial slots, merge) on a port of AttentionWork. Usage: python3 scripts/emulate_attention.py"""
import math
import numpy as np
rng = np.random.default_rng(0)

def ldmatrix_x4(smem, addr, trans=False):
    # addr(lane) -> (row, col) of the 8-element row that lane supplies; returns r[lane][i] = (2 values)
    out = [[None]*4 for _ in range(32)]
    for i in range(4):
        M = np.array([smem[addr(8*i+rr)[0], addr(8*i+rr)[1]:addr(8*i+rr)[1]+8] for rr in range(8)])
        for lane in range(32):
            g, t = lane // 4, lane % 4
            out[lane][i] = (M[g, 2*t], M[g, 2*t+1]) if not trans else (M[2*t, g], M[2*t+1, g])
    return out

def mma(c, a, b0, b1):
    # c[lane] = 4 floats; a[lane] = 4 pairs; b0/b1[lane] = pairs
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        g, t = lane // 4, lane % 4
        A[g, 2*t:2*t+2] = a[lane][0]; A[g+8, 2*t:2*t+2] = a[lane][1]
        A[g, 2*t+8:2*t+10] = a[lane][2]; A[g+8, 2*t+8:2*t+10] = a[lane][3]
        B[2*t:2*t+2, g] = b0[lane]; B[2*t+8:2*t+10, g] = b1[lane]
    C = A @ B
    for lane in range(32):
        g, t = lane // 4, lane % 4
        c[lane] += np.array([C[g, 2*t], C[g, 2*t+1], C[g+8, 2*t], C[g+8, 2*t+1]])

for HEAD_DIM, WARP_KEYS, row_warp, key_warp in [(32, 16, 0, 3), (64, 64, 2, 0), (128, 32, 3, 0), (256, 16, 0, 1)]:
    STRIDE = HEAD_DIM + 8
    rows = 16 * (row_warp + 1); keys_total = WARP_KEYS * (key_warp + 1)
    q_tile = np.zeros((rows, STRIDE)); q_tile[:, :HEAD_DIM] = rng.standard_normal((rows, HEAD_DIM))
    kv = np.zeros((keys_total, STRIDE)); kv[:, :HEAD_DIM] = rng.standard_normal((keys_total, HEAD_DIM))
    vv = np.zeros((keys_total, STRIDE)); vv[:, :HEAD_DIM] = rng.standard_normal((keys_total, HEAD_DIM))
    kbase = key_warp * WARP_KEYS
    q_row = lambda lane, kk: (row_warp*16 + lane % 16, (lane // 16) * 8 + kk * 16)
    s = [[np.zeros(4) for _ in range(32)] for _ in range(WARP_KEYS // 8)]
    for kk in range(HEAD_DIM // 16):
        a = ldmatrix_x4(q_tile, lambda lane: q_row(lane, kk))
        for jp in range(WARP_KEYS // 16):
            b = ldmatrix_x4(kv, lambda lane: (kbase + jp*16 + lane % 8 + (lane // 16) * 8, kk*16 + ((lane // 8) % 2) * 8))
            mma(s[2*jp], a, [x[0] for x in b], [x[1] for x in b])
            mma(s[2*jp+1], a, [x[2] for x in b], [x[3] for x in b])
    S = np.zeros((16, WARP_KEYS))
    for j in range(WARP_KEYS // 8):
        for lane in range(32):
            g, t = lane // 4, lane % 4
            S[g, 8*j+2*t:8*j+2*t+2] = s[j][lane][0:2]; S[g+8, 8*j+2*t:8*j+2*t+2] = s[j][lane][2:4]
    Q = q_tile[row_warp*16:row_warp*16+16, :HEAD_DIM]; K = kv[kbase:kbase+WARP_KEYS, :HEAD_DIM]
    errS = abs(S - Q @ K.T).max()
    # P = S (any values), O = P V via P fragments from S accumulators
    o = [[np.zeros(4) for _ in range(32)] for _ in range(HEAD_DIM // 8)]
    for kk in range(WARP_KEYS // 16):
        p = [(tuple(s[2*kk][lane][0:2]), tuple(s[2*kk][lane][2:4]), tuple(s[2*kk+1][lane][0:2]), tuple(s[2*kk+1][lane][2:4])) for lane in range(32)]
        for jp in range(HEAD_DIM // 16):
            b = ldmatrix_x4(vv, lambda lane: (kbase + kk*16 + lane % 8 + ((lane // 8) % 2) * 8, jp*16 + (lane // 16) * 8), trans=True)
            mma(o[2*jp], p, [x[0] for x in b], [x[1] for x in b])
            mma(o[2*jp+1], p, [x[2] for x in b], [x[3] for x in b])
    O = np.zeros((16, HEAD_DIM))
    for j in range(HEAD_DIM // 8):
        for lane in range(32):
            g, t = lane // 4, lane % 4
            O[g, 8*j+2*t:8*j+2*t+2] = o[j][lane][0:2]; O[g+8, 8*j+2*t:8*j+2*t+2] = o[j][lane][2:4]
    V = vv[kbase:kbase+WARP_KEYS, :HEAD_DIM]
    errO = abs(O - S @ V).max()
    print(f"d={HEAD_DIM} warp keys={WARP_KEYS} row_warp={row_warp} key_warp={key_warp}: max |S err| {errS:.2e}, max |O err| {errO:.2e}")

# ---- part 2: blocks ----

NEG = -np.inf

def plan(seqs, G, KVH, window, sms=132):
    t64, t16 = [], []
    for idx, (rows, first_pos) in enumerate(seqs):
        row0, n = rows
        tpt = n if n * G <= 16 else 64 // G
        for s in range(0, n, tpt):
            tok = min(tpt, n - s); pos = first_pos + s
            it = dict(seq=idx, row=row0 + s, tokens=tok, pos=pos, b=max(0, pos - window + 1) if window else 0, e=pos + tok, partial=-1)
            (t16 if tok * G <= 16 else t64).append(it)
    merges = []; slots = [0]
    def split(tiles, blocks):
        keys = sum(t['e'] - t['b'] for t in tiles) * KVH
        chunk = max(256, -(-keys // max(1, blocks)))
        out = []
        for t in sorted(tiles, key=lambda t: -(t['e'] - t['b'])):
            L = t['e'] - t['b']; wanted = -(-L // chunk); per = -(-(-(-L // wanted)) // 64) * 64; sp = -(-L // per)
            if sp <= 1: out.append(t); continue
            R = t['tokens'] * G
            for s in range(sp):
                p = dict(t); p['b'] = t['b'] + s * per; p['e'] = min(t['e'], p['b'] + per); p['partial'] = slots[0] + s * KVH * R; out.append(p)
            merges.append(dict(row=t['row'], tokens=t['tokens'], partial=slots[0], splits=sp)); slots[0] += sp * KVH * R
        return out
    return split(t64, 2 * sms), split(t16, 4 * sms), merges, slots[0]
    
def block(item, kvh, Q, K, V, G, window, D, tile_rows, tile_keys, out, pacc, pml, scale_log2):
    key_warps = 4 // (tile_rows // 16); wk = tile_keys // key_warps
    rows = item['tokens'] * G
    q = np.zeros((tile_rows, D))
    for r in range(rows): q[r] = Q[item['row'] + r // G, kvh * G + r % G]
    qpos = np.array([item['pos'] + min(r // G, item['tokens'] - 1) for r in range(tile_rows)])
    last = item['pos'] + item['tokens'] - 1
    ntiles = -(-(item['e'] - item['b']) // tile_keys)
    # state per (warp), each warp = (row block, key part)
    m = np.full((4, 16), NEG); l = np.zeros((4, 16)); o = np.zeros((4, 16, D))
    for t in range(ntiles):
        first = item['b'] + t * tile_keys
        masked = first + tile_keys > min(item['e'], item['pos'] + 1) or (window > 0 and first <= last - window)
        for w in range(4):
            rw, kw = w // key_warps, w % key_warps
            keys = np.arange(first + kw * wk, first + kw * wk + wk)
            valid = keys < item['e']
            kk = np.where(valid[:, None], K[np.minimum(keys, K.shape[0]-1), kvh], 0); vv = np.where(valid[:, None], V[np.minimum(keys, K.shape[0]-1), kvh], 0)
            s = q[rw*16:rw*16+16] @ kk.T * scale_log2
            if masked:
                qp = qpos[rw*16:rw*16+16][:, None]
                vis = (keys[None] < item['e']) & (keys[None] <= qp) & ((window == 0) | (keys[None] > qp - window))
                s = np.where(vis, s, NEG)
            new = np.maximum(m[w], s.max(1)); base = np.where(new == NEG, 0, new)
            corr = np.exp2(m[w] - base); m[w] = new
            p = np.exp2(s - base[:, None]); l[w] = l[w] * corr + p.sum(1); o[w] = o[w] * corr[:, None] + p @ vv
    for r in range(rows):
        fw = (r // 16) * key_warps; wr = r % 16
        M = max(m[fw + w, wr] for w in range(key_warps)); base = 0 if M == NEG else M
        wts = [np.exp2(m[fw + w, wr] - base) for w in range(key_warps)]
        S = sum(l[fw + w, wr] * wts[w] for w in range(key_warps)); acc = sum(o[fw + w, wr] * wts[w] for w in range(key_warps))
        if item['partial'] < 0: out[item['row'] + r // G, kvh * G + r % G] = acc / S
        else:
            slot = item['partial'] + kvh * rows + r; pacc[slot] = acc; pml[slot] = (M, S)

def run(QH, KVH, D, window, spec):
    G = QH // KVH; total = sum(c + n for c, n in spec)
    # one flat "cache" per sequence (paging is a pure address map, tested in Swift); emulate per sequence
    seqs = []; row = 0
    for c, n in spec: seqs.append(((row, n), c)); row += n
    T = row
    Ks = [rng.standard_normal((c + n, KVH, D)) for c, n in spec]; Vs = [rng.standard_normal((c + n, KVH, D)) for c, n in spec]
    Q = rng.standard_normal((T, QH, D))
    l64, l16, merges, slots = plan(seqs, G, KVH, window)
    out = np.full((T, QH, D), np.nan); pacc = np.zeros((slots, D)); pml = np.zeros((slots, 2))
    sl = math.log2(math.e) / math.sqrt(D)
    for lst, tr in [(l64, 64), (l16, 16)]:
        for it in lst:
            tk = 32 if (D == 256 and tr == 64) else 64
            for kvh in range(KVH): block(it, kvh, Q, Ks[it['seq']], Vs[it['seq']], G, window or 0, D, tr, tk, out, pacc, pml, sl)
    for mg in merges:
        R = mg['tokens'] * G
        for kvh in range(KVH):
            for r in range(R):
                sl_ = [mg['partial'] + s * KVH * R + kvh * R + r for s in range(mg['splits'])]
                M = max(pml[x, 0] for x in sl_); w = [np.exp2(pml[x, 0] - M) for x in sl_]
                out[mg['row'] + r // G, kvh * G + r % G] = sum(pacc[x] * wi for x, wi in zip(sl_, w)) / sum(pml[x, 1] * wi for x, wi in zip(sl_, w))
    # reference
    err = 0
    for (row0, n), c in seqs:
        idx = [i for i, s in enumerate(seqs) if s[0][0] == row0][0]
        for i in range(n):
            p = c + i; lo = max(0, p - window + 1) if window else 0
            for h in range(QH):
                k = Ks[idx][lo:p+1, h // G]; v = Vs[idx][lo:p+1, h // G]
                sc = k @ Q[row0 + i, h] / math.sqrt(D); e = np.exp(sc - sc.max()); ref = e @ v / e.sum()
                err = max(err, abs(out[row0 + i, h] - ref).max())
    print(f"q{QH}/kv{KVH} d{D} window {window} {spec}: rows64 {len(l64)} rows16 {len(l16)} merges {len(merges)}: max err {err:.2e}")

run(4, 4, 16, None, [(0, 150), (40, 1), (0, 1)])
run(8, 2, 32, 37, [(100, 70), (500, 1), (3, 2)])
run(16, 2, 32, None, [(3000, 1), (2000, 1), (10, 40)])
run(4, 1, 64, None, [(5000, 3), (0, 1)])
run(8, 1, 32, 300, [(4000, 20), (1200, 1)])
