#!/usr/bin/env node
// Runs an ONNX model with ONNX Runtime (onnxruntime-node, CPU) on a float32
// .npy batch and writes the first output as a float32 .npy.
//
//   node tests/onnx/ort_run.js MODEL.onnx IN.npy OUT.npy [--threads N]
//   node tests/onnx/ort_run.js MODEL.onnx --bench BATCHxCxHxW [--threads N] [--no-spin]
//        [--seconds S] [--reps R]
//
// --bench times inference on random input held in memory and prints one
// JSON line: {"images_per_s": median over the repetitions, "reps": [...]}.
// The package comes from .deps/node_modules (scripts/install-onnxruntime),
// or from $OSP_ORT_DIR when set.
'use strict';
const fs = require('fs');
const path = require('path');

const ortDir = process.env.OSP_ORT_DIR ||
    path.join(__dirname, '..', '..', '.deps', 'node_modules', 'onnxruntime-node');
const ort = require(ortDir);

// ---- .npy (float32, C order, little-endian) ----

function readNpy(file) {
    const buf = fs.readFileSync(file);
    if (buf.length < 10 || buf.readUInt8(0) !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY')
        throw new Error(`${file}: not a .npy file`);
    const major = buf.readUInt8(6);
    let hlen, off;
    if (major === 1) {
        hlen = buf.readUInt16LE(8);
        off = 10;
    } else if (major === 2 || major === 3) {
        hlen = buf.readUInt32LE(8);
        off = 12;
    } else {
        throw new Error(`${file}: .npy version ${major} is not supported`);
    }
    const header = buf.toString('latin1', off, off + hlen);
    const descr = /'descr':\s*'([^']*)'/.exec(header);
    const fortran = /'fortran_order':\s*(True|False)/.exec(header);
    const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
    if (!descr || !fortran || !shape) throw new Error(`${file}: bad .npy header ${header}`);
    if (descr[1] !== '<f4' && descr[1] !== '=f4')
        throw new Error(`${file}: dtype ${descr[1]}, expected float32 ('<f4')`);
    if (fortran[1] !== 'False') throw new Error(`${file}: Fortran order is not supported`);
    const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
    const count = dims.reduce((a, b) => a * b, 1);
    const start = off + hlen;
    if (buf.length - start !== 4 * count)
        throw new Error(`${file}: ${buf.length - start} data bytes for shape (${dims})`);
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = buf.readFloatLE(start + 4 * i);
    return { dims, data };
}

function writeNpy(file, dims, data) {
    const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
    let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
    // magic (6) + version (2) + length (2) + header + '\n', padded to 64
    const total = Math.ceil((10 + header.length + 1) / 64) * 64;
    header = header.padEnd(total - 10 - 1, ' ') + '\n';
    const out = Buffer.alloc(total + 4 * data.length);
    out.writeUInt8(0x93, 0);
    out.write('NUMPY', 1, 'latin1');
    out.writeUInt8(1, 6);
    out.writeUInt8(0, 7);
    out.writeUInt16LE(header.length, 8);
    out.write(header, 10, 'latin1');
    for (let i = 0; i < data.length; i++) out.writeFloatLE(data[i], total + 4 * i);
    const tmp = `${file}.tmp${process.pid}`;
    fs.writeFileSync(tmp, out);
    fs.renameSync(tmp, file);
}

// ---- main ----

function usage() {
    process.stderr.write('usage: ort_run.js MODEL.onnx IN.npy OUT.npy [--threads N]\n' +
                         '       ort_run.js MODEL.onnx --bench BxCxHxW [--threads N] ' +
                         '[--seconds S] [--reps R]\n');
    process.exit(2);
}

function median(v) {
    const s = [...v].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main() {
    const args = process.argv.slice(2);
    const pos = [];
    const opt = { threads: 0, bench: null, seconds: 2, reps: 5, spin: true };
    for (let i = 0; i < args.length; i++) {
        const a = args[i];
        if (a === '--threads') opt.threads = Number(args[++i]);
        else if (a === '--bench') opt.bench = args[++i];
        else if (a === '--seconds') opt.seconds = Number(args[++i]);
        else if (a === '--reps') opt.reps = Number(args[++i]);
        else if (a === '--no-spin') opt.spin = false;
        else if (a.startsWith('--')) usage();
        else pos.push(a);
    }
    if (pos.length !== (opt.bench ? 1 : 3)) usage();
    const so = { graphOptimizationLevel: 'all', executionMode: 'sequential' };
    if (opt.threads > 0) {
        so.intraOpNumThreads = opt.threads;
        so.interOpNumThreads = 1;
    }
    // --no-spin: intra-op threads sleep between ops instead of spinning
    // (ORT spins by default).
    if (!opt.spin) so.extra = { session: { intra_op: { allow_spinning: '0' } } };
    const session = await ort.InferenceSession.create(pos[0], so);
    const inName = session.inputNames[0], outName = session.outputNames[0];

    if (opt.bench) {
        const dims = opt.bench.split('x').map(Number);
        const count = dims.reduce((a, b) => a * b, 1);
        const x = new Float32Array(count);
        let seed = 1;
        for (let i = 0; i < count; i++) {
            seed = (seed * 1103515245 + 12345) >>> 0;
            x[i] = seed / 4294967296;
        }
        const feeds = { [inName]: new ort.Tensor('float32', x, dims) };
        // Warm up (the first runs allocate), then find a step count that
        // takes about --seconds.
        await session.run(feeds);
        let t0 = process.hrtime.bigint();
        await session.run(feeds);
        const once = Number(process.hrtime.bigint() - t0) / 1e9;
        const steps = Math.max(1, Math.round(opt.seconds / Math.max(once, 1e-6)));
        const rates = [];
        for (let r = 0; r < opt.reps; r++) {
            t0 = process.hrtime.bigint();
            for (let s = 0; s < steps; s++) await session.run(feeds);
            const dt = Number(process.hrtime.bigint() - t0) / 1e9;
            rates.push((steps * dims[0]) / dt);
        }
        process.stdout.write(JSON.stringify({ images_per_s: median(rates), steps, reps: rates }) + '\n');
        return;
    }

    const x = readNpy(pos[1]);
    const result = await session.run({ [inName]: new ort.Tensor('float32', x.data, x.dims) });
    const y = result[outName];
    if (y.type !== 'float32') throw new Error(`output ${outName} is ${y.type}, not float32`);
    writeNpy(pos[2], y.dims.map(Number), y.data);
}

// Run as a command; required (tests/onnx/ort_batch.js), it lends its parts.
if (require.main === module) {
    main().catch((e) => {
        process.stderr.write(`ort_run.js: ${e.message || e}\n`);
        process.exit(1);
    });
}
module.exports = { ort, readNpy, writeNpy };
