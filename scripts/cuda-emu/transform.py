"""Copies native/kernels into a build folder, rewriting what g++ cannot read: <<<>>> launches become
emu::launch calls, __shared__ arrays become per-CTA buffers, ptx.cuh becomes the emulated one."""
import pathlib, re, shutil, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)

def match_back(s, i):
    # s[i-1] == '>' : find the matching '<'
    depth = 0
    j = i - 1
    while j >= 0:
        if s[j] == '>': depth += 1
        elif s[j] == '<':
            depth -= 1
            if depth == 0: return j
        j -= 1
    raise ValueError

def launches(s):
    while True:
        i = s.find('<<<')
        if i < 0: return s
        j = i
        if s[j-1] == '>': j = match_back(s, j)
        k = j
        while k > 0 and (s[k-1].isalnum() or s[k-1] in '_:'): k -= 1
        kernel = s[k:i]
        e = s.index('>>>', i)
        cfg = s[i+3:e]
        p = e + 3
        assert s[p] == '(', s[p:p+20]
        depth, q = 0, p
        while True:
            if s[q] == '(': depth += 1
            elif s[q] == ')':
                depth -= 1
                if depth == 0: break
            q += 1
        args = s[p+1:q]
        sep = ', ' if args.strip() else ''
        s = s[:k] + f'emu::launch(&{kernel}, {cfg}{sep}{args})' + s[q+1:]

for f in src.iterdir():
    if f.suffix not in ('.cu', '.cuh', '.h'): continue
    if f.name == 'ptx.cuh': continue
    s = f.read_text()
    s = s.replace('extern __shared__ __align__(16) unsigned char smem[];', 'unsigned char* smem = emu::dynamicShared();')
    s = re.sub(r'__shared__ (?:__align__\(\d+\) )?([\w:]+) (\w+)\[([^\]]+)\];',
               lambda m: f'{m.group(1)}* {m.group(2)} = emu::staticShared<{m.group(1)}>({m.group(3)}, __LINE__ + 100000 * {abs(hash(f.name)) % 1000});', s)
    s = launches(s)
    (out / (f.stem + ('.cpp' if f.suffix == '.cu' else f.suffix))).write_text(s)
shutil.copy(pathlib.Path(__file__).parent / 'ptx.cuh', out / 'ptx.cuh')
