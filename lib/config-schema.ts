/**
 * JSON Schema of `coltrast train --config` files, checked with Ajv (a maintained, standard validator) so
 * that a config file's mistakes are reported with their JSON path before anything runs. Editors can use
 * the same schema (`coltrast train --print-schema`). train() still checks its options itself, for API
 * callers who never write a file.
 */
import type { ValidateFunction } from 'ajv';
import { ColtrastError } from './errors';

const number = (extra: object = {}) => ({ type: 'number', ...extra });
const integer = (minimum: number) => ({ type: 'integer', minimum });
const fraction = { type: 'number', minimum: 0, exclusiveMaximum: 1 };

export const TRAIN_CONFIG_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'coltrast train configuration',
  type: 'object',
  additionalProperties: false,
  properties: {
    model: { type: 'string', minLength: 1, description: "model folder or Hugging Face id (default 'default', the shipped model)" },
    data: { type: 'string', minLength: 1, description: 'ColTrast .json or .jsonl pairs/triplets' },
    output: { type: 'string', minLength: 1 },
    epochs: integer(1),
    batchSize: integer(1),
    learningRate: number({ exclusiveMinimum: 0 }),
    warmupRatio: fraction,
    schedule: { enum: ['linear', 'cosine', 'constant'] },
    weightDecay: number({ minimum: 0 }),
    maxGradNorm: number({ minimum: 0 }),
    gradientAccumulation: integer(1),
    miniBatchSize: integer(1),
    valSplit: {
      oneOf: [fraction, integer(1)],
      description: 'held out for validation, by group: a fraction in [0, 1) of the groups or a whole number >= 1 of them (default 0.2 of them, at most 1,000)',
    },
    maxNegatives: integer(0),
    checkpointEvery: integer(0),
    resume: { type: 'boolean' },
    seed: integer(0),
    device: { type: 'string', pattern: '^(auto|cpu|cuda(:\\d+)?)$' },
    threads: integer(1),
    precision: { enum: ['float32', 'bfloat16', 'float16'] },
    prompts: { type: 'boolean' },
    freezeBase: { type: 'boolean' },
    gradientCheckpointing: { type: 'boolean' },
    lora: {
      oneOf: [
        { type: 'boolean' },
        {
          type: 'object',
          additionalProperties: false,
          properties: { rank: integer(1), alpha: { type: 'number', exclusiveMinimum: 0 }, dropout: { type: 'number', minimum: 0, exclusiveMaximum: 1 }, targetModules: { type: 'array', items: { type: 'string' }, minItems: 1 } },
        },
      ],
    },
    contrastiveTension: { type: 'boolean' },
    mineNegatives: {
      oneOf: [
        { type: 'boolean' },
        {
          type: 'object',
          additionalProperties: false,
          properties: {
            numNegatives: integer(1), rangeMin: integer(0), rangeMax: integer(1), maxScore: number(), minScore: number(), absoluteMargin: number(),
            relativeMargin: number(), samplingStrategy: { enum: ['top', 'random'] }, seed: integer(0),
            corpus: { oneOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string' } }] },
            plaid: {
              oneOf: [
                { type: 'boolean' },
                { type: 'object', additionalProperties: false, properties: { residualBits: { enum: [1, 2, 4] }, centroids: integer(1), nprobe: integer(1), fullScores: integer(1) } },
              ],
            },
          },
        },
      ],
    },
    loss: {
      type: 'object',
      additionalProperties: false,
      properties: {
        contrastiveWeight: number({ minimum: 0 }),
        lateInteractionWeight: number({ minimum: 0 }),
        temperature: number({ exclusiveMinimum: 0 }),
        lateInteraction: { enum: ['cross_entropy', 'bce'] },
        symmetric: { type: 'boolean' },
        distillation: { enum: ['margin_mse', 'kl', 'mse'] },
        distillationWeight: number({ minimum: 0 }),
        teacherTemperature: number({ exclusiveMinimum: 0 }),
        matryoshka: {
          type: 'object',
          additionalProperties: false,
          required: ['dimensions'],
          properties: {
            dimensions: { type: 'array', minItems: 1, uniqueItems: true, items: integer(1) },
            weights: { type: 'array', minItems: 1, items: number({ minimum: 0 }) },
            dimensionsPerStep: integer(1),
          },
          description: 'Matryoshka representation learning: the pooled losses at each width (the vectors cut to their first entries)',
        },
        pairs: {
          enum: ['cosent', 'angle', 'cosine', 'contrastive', 'online_contrastive'],
          description: "labeled pairs' loss (examples with a label or score): CoSENTLoss, AnglELoss, CosineSimilarityLoss, ContrastiveLoss or OnlineContrastiveLoss",
        },
        margin: number({ minimum: 0 }),
        triplet: {
          oneOf: [
            { type: 'boolean' },
            { type: 'object', additionalProperties: false, properties: { distance: { enum: ['euclidean', 'cosine', 'manhattan'] }, margin: number({ minimum: 0 }) } },
          ],
          description: "sentence-transformers' TripletLoss on each example's query, positive and first negative",
        },
        batchTriplet: {
          oneOf: [
            { enum: ['all', 'hard', 'semi_hard', 'hard_soft_margin'] },
            {
              type: 'object',
              additionalProperties: false,
              required: ['kind'],
              properties: { kind: { enum: ['all', 'hard', 'semi_hard', 'hard_soft_margin'] }, distance: { enum: ['euclidean', 'cosine'] }, margin: number({ minimum: 0 }) },
            },
          ],
          description: "texts of classes ({ text, label }): sentence-transformers' BatchAllTripletLoss, BatchHardTripletLoss, BatchSemiHardTripletLoss or BatchHardSoftMarginTripletLoss",
        },
        adaptiveLayers: {
          oneOf: [
            { type: 'boolean' },
            {
              type: 'object',
              additionalProperties: false,
              properties: {
                layersPerStep: { oneOf: [integer(1), { const: 'all' }] },
                lastLayerWeight: number({ minimum: 0 }),
                priorLayersWeight: number({ minimum: 0 }),
                layerWeighting: { enum: ['uniform', 'log', 'linear'] },
                klTemperature: number({ minimum: 0 }),
                klWeight: number({ minimum: 0 }),
              },
            },
          ],
          description: "adaptive layers (sentence-transformers' AdaptiveLayerLoss; with matryoshka, Matryoshka2dLoss): the pooled losses also after fewer layers",
        },
        gor: {
          oneOf: [
            { type: 'boolean' },
            {
              type: 'object',
              additionalProperties: false,
              properties: { meanWeight: number({ minimum: 0 }), secondMomentWeight: number({ minimum: 0 }), aggregation: { enum: ['mean', 'sum'] } },
            },
          ],
          description: "global orthogonal regularization (sentence-transformers' GlobalOrthogonalRegularizationLoss) added to the loss: spreads the vectors out",
        },
        megaBatchMargin: {
          oneOf: [
            { type: 'boolean' },
            { type: 'object', additionalProperties: false, properties: { positiveMargin: number(), negativeMargin: number() } },
          ],
          description: "sentence-transformers' MegaBatchMarginLoss on (anchor, positive) pairs: each anchor's hardest negative is the batch's most similar other positive",
        },
      },
    },
    guide: {
      anyOf: [
        { type: 'string', minLength: 1 },
        {
          type: 'object',
          additionalProperties: false,
          required: ['model'],
          properties: {
            model: { type: 'string', minLength: 1 },
            marginStrategy: { enum: ['absolute', 'relative'] },
            margin: number(),
            contrastQueries: { type: 'boolean' },
            contrastPositives: { type: 'boolean' },
          },
        },
      ],
      description: 'GISTEmbed: an embedding model (folder or Hugging Face id) that filters likely false negatives',
    },
    teacher: { type: 'string', minLength: 1, description: 'a one-label cross-encoder (folder or Hugging Face id) whose scores the model is distilled from' },
    earlyStopping: {
      type: 'object',
      additionalProperties: false,
      required: ['patience'],
      properties: { patience: integer(1), metric: { enum: ['loss', 'recall@1', 'mrr@10', 'spearman'] } },
    },
    projection: {
      type: 'object',
      additionalProperties: false,
      required: ['dimension'],
      properties: { dimension: integer(1), activation: { enum: ['identity', 'tanh'] } },
    },
    multiVector: {
      type: 'object',
      additionalProperties: false,
      properties: {
        dimension: integer(1),
        queryLength: integer(1),
        documentLength: integer(1),
        queryExpansion: { enum: ['fixed', 'min', 'none'] },
        attendExpansion: { type: 'boolean' },
        skiplist: { type: 'array', items: { type: 'string' } },
        queryPrompt: { type: 'string' },
        documentPrompt: { type: 'string' },
      },
    },
    crossEncoder: {
      anyOf: [
        { type: 'boolean' },
        {
          type: 'object',
          additionalProperties: false,
          properties: {
            loss: { enum: ['cross_entropy', 'bce'] },
            scale: number({ exclusiveMinimum: 0 }),
            chatTemplate: { type: 'string', minLength: 1 },
            tokens: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1, maxItems: 2 },
          },
        },
      ],
    },
    sparse: {
      anyOf: [
        { type: 'boolean' },
        {
          type: 'object',
          additionalProperties: false,
          properties: {
            queryRegularizer: number({ minimum: 0 }),
            documentRegularizer: number({ minimum: 0 }),
            warmupRatio: number({ minimum: 0, maximum: 1 }),
            schedule: { enum: ['quadratic', 'linear'] },
          },
        },
      ],
    },
    mlm: {
      anyOf: [{ type: 'boolean' }, { type: 'object', additionalProperties: false, properties: { probability: number({ exclusiveMinimum: 0, exclusiveMaximum: 1 }) } }],
    },
    chunking: {
      type: 'object',
      additionalProperties: false,
      properties: { threshold: number({ minimum: -1, maximum: 1 }), maxTokens: integer(1) },
    },
    mining: {
      type: 'object',
      additionalProperties: false,
      properties: { positiveThreshold: number({ minimum: -1, maximum: 1 }), hardNegatives: integer(0) },
    },
  },
} as const;

// Required and compiled when a config is first checked (~0.05 s to require Ajv, ~0.1 s to compile), not when the module
// loads: `coltrast train --print-schema` and whoever imports only the schema never pay for it.
let compiled: ValidateFunction | undefined;
function trainConfigValidator(): ValidateFunction {
  if (!compiled) {
    const { default: Ajv } = require('ajv') as typeof import('ajv');
    compiled = new Ajv({ allErrors: true }).compile(TRAIN_CONFIG_SCHEMA);
  }
  return compiled;
}

/** Throws one INVALID_ARGUMENT error listing every problem of `config` (from `file`) with its path. */
export function checkTrainConfig(config: unknown, file: string): void {
  const validator = trainConfigValidator();
  if (validator(config)) return;
  const problems = (validator.errors ?? []).map((e) => {
    const where = e.instancePath || '(top level)';
    const extra = e.keyword === 'additionalProperties' ? ` "${(e.params as { additionalProperty: string }).additionalProperty}"` : '';
    const allowed = e.keyword === 'enum' ? ` (${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})` : '';
    return `${where}: ${e.message}${extra}${allowed}`;
  });
  throw new ColtrastError('INVALID_ARGUMENT', `${file} does not match the train configuration schema:\n  ${problems.join('\n  ')}`);
}
