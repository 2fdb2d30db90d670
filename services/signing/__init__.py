"""The signing service: ES256 signatures of SHA-256 digests from an HSM (PKCS#11) or a software keystore."""
