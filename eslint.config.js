// Lint that holds the project's habits: no floating promises, type-only
// imports marked as such, and the layers (see test/layers.test.ts for the
// rules a lint plugin cannot say: which folder may import which, and that
// no file outside a backend's folder names a backend).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/tmp/**', 'test-results/**', 'web/dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts', 'client/**/*.ts', 'daemon/**/*.ts', 'server/**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-empty': ['error', { allowEmptyCatch: false }],
      'no-control-regex': 'off',
    },
  },
  {
    // The dashboard's front end (bundled for browsers): the same habits, browser globals, and only the API's types from src/.
    files: ['web/**/*.ts', 'web/**/*.tsx'],
    languageOptions: {
      globals: { ...globals.browser },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/consistent-type-imports': ['error', { prefer: 'type-imports', fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/client/**', '**/daemon/**', '**/server/**'], message: 'the front end speaks to the server only through its public API' }] }],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      // src/ is the shared core: it never prints or exits (client/ renders; daemon/ and server/ serve).
      'no-console': 'error',
      'no-restricted-properties': ['error', { object: 'process', property: 'exit', message: 'src/ never exits: throw a QwexError' }],
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/client/**', '**/daemon/**', '**/server/**'], message: 'src/ never imports client/, daemon/ or server/' }] }],
    },
  },
  {
    files: ['client/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/daemon/**', '**/server/**'], message: 'client/ and daemon/ never import each other' }] }] },
  },
  {
    files: ['daemon/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/client/**', '**/server/**'], message: 'client/ and daemon/ never import each other' }] }] },
  },
  {
    files: ['test/**/*.ts', 'test/**/*.mjs', 'bench/**/*.mjs', 'scripts/**/*.mjs', '*.js', '*.ts'],
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      'no-empty': ['error', { allowEmptyCatch: true }],
      'no-control-regex': 'off',
    },
  },
);
