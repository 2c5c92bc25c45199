//! The certificates a throwaway control plane needs, generated fresh for each one.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::TestEnvError;

/// PEM-encoded material for one control plane.
pub(crate) struct Pki {
    /// The CA that signs the serving certificate; clients trust it.
    pub serving_ca: String,
    /// The API server's serving certificate and key.
    pub serving_cert: String,
    pub serving_key: String,
    /// The CA the API server trusts for client certificates.
    pub client_ca: String,
    /// The admin's client certificate (CN=switchyard-admin, O=system:masters) and key.
    pub admin_cert: String,
    pub admin_key: String,
    /// The key that signs service-account tokens, and its public half that verifies them.
    pub service_account_key: String,
    pub service_account_public_key: String,
}

fn ca(common_name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name = name(common_name, None);
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

impl Pki {
    pub(crate) fn generate() -> Result<Self, TestEnvError> {
        Self::try_generate().map_err(TestEnvError::Certificates)
    }

    fn try_generate() -> Result<Self, rcgen::Error> {
        let serving_ca = ca("switchyard-testenv-serving-ca")?;
        let client_ca = ca("switchyard-testenv-client-ca")?;

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec!["localhost".to_owned()])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &serving_ca)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name = name("switchyard-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &client_ca)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            serving_ca: serving_ca.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            client_ca: client_ca.pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_key: service_account.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
        })
    }
}
