#!/usr/bin/env node
// Runs many ONNX models with ONNX Runtime in one process (starting Node and
// loading the runtime once, not per model): LIST holds one "MODEL.onnx
// IN.npy OUT.npy" per line; each output is written as ort_run.js writes it.
//
//   node tests/onnx/ort_batch.js LIST [--threads N]
'use strict';
const fs = require('fs');
const { ort, readNpy, writeNpy } = require('./ort_run.js');

async function main() {
    const args = process.argv.slice(2);
    if (args.length !== 1 && !(args.length === 3 && args[1] === '--threads')) {
        process.stderr.write('usage: ort_batch.js LIST [--threads N]\n');
        process.exit(2);
    }
    const threads = args.length === 3 ? Number(args[2]) : 1;
    const so = { graphOptimizationLevel: 'all', executionMode: 'sequential',
                 intraOpNumThreads: threads, interOpNumThreads: 1 };
    const lines = fs.readFileSync(args[0], 'utf8').split('\n').filter((l) => l.trim());
    for (const line of lines) {
        const [model, input, output] = line.trim().split(/\s+/);
        const session = await ort.InferenceSession.create(model, so);
        const x = readNpy(input);
        const result = await session.run({ [session.inputNames[0]]:
                                           new ort.Tensor('float32', x.data, x.dims) });
        const y = result[session.outputNames[0]];
        if (y.type !== 'float32') throw new Error(`${model}: output is ${y.type}, not float32`);
        writeNpy(output, y.dims.map(Number), y.data);
    }
}

main().catch((e) => {
    process.stderr.write(`ort_batch.js: ${e.message || e}\n`);
    process.exit(1);
});
