export const SDK_VERSION = '0.1.0';
export const SDK_NAME = 'fiscal-pos-sdk-js';
